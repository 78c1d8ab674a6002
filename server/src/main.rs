//! The `prism` binary: `prism` / `prism serve` runs the server, `prism token create` mints an
//! access token, `prism room ...` and `prism participant ...` talk to a server's control plane.

mod cli;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use prism_server::auth::{AccessToken, Grants};
use prism_server::config::{Config, DEV_API_KEY};

#[derive(Parser)]
#[command(name = "prism", version, about = "Prism SFU media server")]
struct Cli {
    /// TOML configuration file; PRISM_* environment variables override it.
    #[arg(long, short, global = true, env = "PRISM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Rooms on a running server (control plane).
    Room {
        #[command(flatten)]
        server: cli::ServerArgs,
        #[command(subcommand)]
        command: cli::RoomCommand,
    },
    /// Participants of a room on a running server (control plane).
    Participant {
        #[command(flatten)]
        server: cli::ServerArgs,
        #[command(subcommand)]
        command: cli::ParticipantCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a signed access token for joining a room.
    Create(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The room the token is for; may be left out with --admin (then it covers every room).
    #[arg(long, default_value = "")]
    room: String,
    #[arg(long)]
    identity: String,
    #[arg(long, default_value = "")]
    name: String,
    /// Validity, e.g. 6h, 30m, 3600s.
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    ttl: Duration,
    /// API key to sign with (default: the configured one, if there is exactly one, else devkey).
    #[arg(long)]
    api_key: Option<String>,
    #[arg(long)]
    no_publish: bool,
    #[arg(long)]
    no_subscribe: bool,
    /// Also grant room_admin, room_create and room_list (the control plane, drain mode).
    #[arg(long)]
    admin: bool,
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("unknown unit {unit:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(seconds))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Control-plane commands are clients: they need no server configuration.
    let load = || Config::load(cli.config.as_deref()).context("loading configuration");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(load()?),
        Command::Token {
            command: TokenCommand::Create(args),
        } => {
            println!("{}", create_token(&load()?, args)?);
            Ok(())
        }
        Command::Room { server, command } => cli::run(cli::room(server, command)),
        Command::Participant { server, command } => cli::run(cli::participant(server, command)),
    }
}

fn create_token(config: &Config, args: TokenArgs) -> anyhow::Result<String> {
    let key = match args.api_key {
        Some(k) => k,
        None if config.keys.len() == 1 => config.keys.keys().next().cloned().unwrap_or_default(),
        None => DEV_API_KEY.to_owned(),
    };
    let secret = config
        .keys
        .get(&key)
        .with_context(|| format!("API key {key:?} is not configured"))?;
    if args.room.is_empty() && !args.admin {
        anyhow::bail!("--room is required (only an --admin token may cover every room)");
    }
    let grants = Grants {
        can_publish: !args.no_publish,
        can_subscribe: !args.no_subscribe,
        room_admin: args.admin,
        room_create: args.admin,
        room_list: args.admin,
        ..Grants::default()
    };
    Ok(AccessToken::new(&key, secret)
        .identity(&args.identity)
        .name(&args.name)
        .room(&args.room)
        .ttl(args.ttl)
        .grants(grants)
        .to_jwt()?)
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Inside the runtime: the OTLP exporter's gRPC client runs on it.
        let telemetry = prism_server::telemetry::init(&config.log, &config.telemetry)
            .context("starting logs and telemetry")?;
        if config.uses_dev_keys() {
            println!("Development API key:    {}", DEV_API_KEY);
            println!(
                "Development API secret: {}",
                config
                    .keys
                    .get(DEV_API_KEY)
                    .map(String::as_str)
                    .unwrap_or("")
            );
            println!("Mint a token: prism token create --room my-room --identity alice");
        }
        let server = prism_server::Server::start(config).await?;
        println!("Prism listening on http://{}", server.http_addr());
        tokio::signal::ctrl_c().await.ok();
        tracing::info!("shutting down");
        server.shutdown().await;
        // Flushes the spans not exported yet.
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await??;
        Ok(())
    })
}
