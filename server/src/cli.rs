//! `prism room ...` and `prism participant ...`: the control plane from the command line,
//! through the SDK's [`ControlClient`].

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use prism_client::control::{ControlClient, CreateRoomRequest};
use prism_server::config::{DEV_API_KEY, DEV_API_SECRET};

/// Which server, and the credentials to use.
#[derive(Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "PRISM_URL",
        default_value = "http://127.0.0.1:7880",
        global = true
    )]
    url: String,
    /// API key (default: the development key, with the development secret).
    #[arg(long, env = "PRISM_API_KEY", global = true)]
    api_key: Option<String>,
    /// API secret of the key.
    #[arg(long, env = "PRISM_API_SECRET", hide_env_values = true, global = true)]
    api_secret: Option<String>,
    /// Print protobuf JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum RoomCommand {
    /// Create a room (or show the existing one of that name).
    Create {
        name: String,
        /// How long the room stays open while empty, e.g. 10m (default: the server's setting).
        #[arg(long, value_parser = crate::parse_duration)]
        empty_timeout: Option<Duration>,
        /// 0 = the server's setting.
        #[arg(long, default_value_t = 0)]
        max_participants: u32,
        #[arg(long, default_value = "")]
        metadata: String,
    },
    /// List rooms (all, or those named).
    List { names: Vec<String> },
    /// Close a room, disconnecting everyone in it.
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum ParticipantCommand {
    /// List a room's participants.
    List {
        #[arg(long)]
        room: String,
    },
    /// Disconnect a participant.
    Remove {
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
    },
}

/// Runs a control-plane command on a small runtime of its own.
pub fn run(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}

async fn connect(server: &ServerArgs) -> anyhow::Result<ControlClient> {
    let (key, secret) = match (&server.api_key, &server.api_secret) {
        (Some(k), Some(s)) => (k.clone(), s.clone()),
        (None, None) => (DEV_API_KEY.to_owned(), DEV_API_SECRET.to_owned()),
        _ => anyhow::bail!(
            "give both an API key and its secret (--api-key/--api-secret or PRISM_API_KEY/PRISM_API_SECRET)"
        ),
    };
    ControlClient::connect(&server.url, &key, &secret)
        .await
        .with_context(|| format!("connecting to {}", server.url))
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!("{}", prism_proto::to_json(value));
}

fn print_rooms(rooms: &[prism_proto::signal::Room]) {
    println!(
        "{:<24} {:<16} {:>12} {:>8} {:>8}",
        "NAME", "SID", "PARTICIPANTS", "MAX", "EMPTY_S"
    );
    for r in rooms {
        println!(
            "{:<24} {:<16} {:>12} {:>8} {:>8}",
            r.name, r.sid, r.num_participants, r.max_participants, r.empty_timeout
        );
    }
}

pub async fn room(server: ServerArgs, command: RoomCommand) -> anyhow::Result<()> {
    let control = connect(&server).await?;
    match command {
        RoomCommand::Create {
            name,
            empty_timeout,
            max_participants,
            metadata,
        } => {
            let empty_timeout = empty_timeout
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                .unwrap_or(0);
            let room = control
                .create_room(CreateRoomRequest {
                    name,
                    empty_timeout,
                    max_participants,
                    metadata,
                })
                .await?;
            if server.json {
                print_json(&room);
            } else {
                print_rooms(&[room]);
            }
        }
        RoomCommand::List { names } => {
            let rooms = control.list_rooms(&names).await?;
            if server.json {
                print_json(&prism_proto::control::ListRoomsResponse { rooms });
            } else {
                print_rooms(&rooms);
            }
        }
        RoomCommand::Delete { name } => {
            control.delete_room(&name).await?;
            if !server.json {
                println!("deleted room {name}");
            }
        }
    }
    Ok(())
}

pub async fn participant(server: ServerArgs, command: ParticipantCommand) -> anyhow::Result<()> {
    let control = connect(&server).await?;
    match command {
        ParticipantCommand::List { room } => {
            let participants = control.list_participants(&room).await?;
            if server.json {
                print_json(&prism_proto::control::ListParticipantsResponse { participants });
                return Ok(());
            }
            println!(
                "{:<24} {:<16} {:<12} {:>6}",
                "IDENTITY", "SID", "STATE", "TRACKS"
            );
            for p in participants {
                println!(
                    "{:<24} {:<16} {:<12} {:>6}",
                    p.identity,
                    p.sid,
                    p.state().as_str_name(),
                    p.tracks.len()
                );
            }
        }
        ParticipantCommand::Remove { room, identity } => {
            control.remove_participant(&room, &identity).await?;
            if !server.json {
                println!("removed {identity} from {room}");
            }
        }
    }
    Ok(())
}
