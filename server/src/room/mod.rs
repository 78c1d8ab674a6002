//! Rooms and their participants: who is in a room, what each publishes, who subscribes to
//! what. This layer is a lookup table over the media that workers own: it decides, the worker
//! of the room carries it out. Every room lives on one worker, so its forwarding never
//! crosses threads.

mod admin;
mod data;
pub mod events;
mod member;
mod roster;
mod state;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rand::RngExt;
use rand::distr::Alphanumeric;

use crate::config::Config;
use crate::transport::Transport;
pub use admin::ParticipantUpdate;
pub use data::MAX_DATA_PACKET;
pub use events::{EventBus, EventSink};
pub use member::JoinSpec;
use prism_proto::signal::DisconnectReason;
pub use state::{Joined, Room};

/// Longest room name accepted.
pub const MAX_ROOM_NAME: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomError {
    #[error("room {0:?} does not exist")]
    RoomNotFound(String),
    #[error("room {0:?} is full ({1} participants)")]
    RoomFull(String, u32),
    #[error("room {0:?} is closing")]
    RoomClosed(String),
    #[error("participant is not in the room")]
    ParticipantNotFound,
    #[error("participant {0:?} is not in the room")]
    IdentityNotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("track {0:?} not found")]
    TrackNotFound(String),
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("the media worker cannot take the request: {0}")]
    Transport(String),
    #[error("this server is draining: it takes no new participants, try another node")]
    Draining,
}

/// A server-assigned id with a readable prefix, e.g. `PA_3kT9x2QmZ1aB`.
pub fn new_sid(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..12).map(|_| rng.sample(Alphanumeric) as char).collect();
    format!("{prefix}_{tail}")
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Per-room settings, from CreateRoom or the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSettings {
    /// How long the room stays open while empty.
    pub empty_timeout: Duration,
    /// 0 = unlimited.
    pub max_participants: u32,
    pub metadata: String,
}

/// Every room of this node, by name.
pub struct RoomManager {
    rooms: DashMap<String, Arc<Room>>,
    transport: Arc<Transport>,
    config: Arc<Config>,
    events: Arc<EventBus>,
    /// Drain mode: no new participants; the rooms here end when their last one leaves.
    draining: std::sync::atomic::AtomicBool,
}

impl RoomManager {
    pub fn new(config: Arc<Config>, transport: Arc<Transport>, events: Arc<EventBus>) -> Arc<Self> {
        Arc::new(Self {
            rooms: DashMap::new(),
            transport,
            config,
            events,
            draining: Default::default(),
        })
    }

    /// Enters or leaves drain mode (joins refused while on; see [`RoomError::Draining`]).
    pub fn set_draining(&self, on: bool) {
        let was = self.draining.swap(on, std::sync::atomic::Ordering::Relaxed);
        if was != on {
            tracing::info!(draining = on, "drain mode changed");
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }

    /// The settings of a room created by a join.
    pub fn default_settings(&self) -> RoomSettings {
        RoomSettings {
            empty_timeout: Duration::from_secs(self.config.room.empty_timeout_secs),
            max_participants: self.config.room.max_participants,
            metadata: String::new(),
        }
    }

    fn new_room(&self, name: &str, settings: RoomSettings) -> Arc<Room> {
        let room = Arc::new(Room::new(
            name.to_owned(),
            self.transport.pick(),
            settings,
            self.events.clone(),
        ));
        room.started();
        tracing::info!(room = %name, sid = %room.sid, worker = room.worker.index, "room created");
        room
    }

    /// Creates a room with explicit settings, or returns the existing one of that name
    /// unchanged (with `false`). A new room closes after its empty timeout unless someone
    /// joins.
    pub fn create(
        self: &Arc<Self>,
        name: &str,
        settings: RoomSettings,
    ) -> Result<(Arc<Room>, bool), RoomError> {
        validate_room_name(name)?;
        let mut created = false;
        let room = self
            .rooms
            .entry(name.to_owned())
            .or_insert_with(|| {
                created = true;
                self.new_room(name, settings)
            })
            .clone();
        if created {
            self.release(&room);
        }
        Ok((room, created))
    }

    /// Closes a room now: everyone in it is disconnected with `ROOM_DELETED`.
    pub fn delete(&self, name: &str) -> Result<(), RoomError> {
        let Some((_, room)) = self.rooms.remove(name) else {
            return Err(RoomError::RoomNotFound(name.to_owned()));
        };
        room.close(DisconnectReason::RoomDeleted);
        tracing::info!(room = %room.name, sid = %room.sid, "room deleted");
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn get(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.get(name).map(|r| r.clone())
    }

    /// The room to join: the existing one, or a new one on the least loaded worker when rooms
    /// are created on first join. Refused in drain mode.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Room>, RoomError> {
        if self.is_draining() {
            return Err(RoomError::Draining);
        }
        if let Some(room) = self.get(name) {
            return Ok(room);
        }
        if !self.config.room.auto_create {
            return Err(RoomError::RoomNotFound(name.to_owned()));
        }
        validate_room_name(name)?;
        let room = self
            .rooms
            .entry(name.to_owned())
            .or_insert_with(|| self.new_room(name, self.default_settings()))
            .clone();
        Ok(room)
    }

    pub fn rooms(&self) -> Vec<Arc<Room>> {
        self.rooms.iter().map(|r| r.value().clone()).collect()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn participant_count(&self) -> usize {
        self.rooms.iter().map(|r| r.participant_count()).sum()
    }

    /// Published tracks and subscriptions over every room.
    pub fn track_counts(&self) -> (usize, usize) {
        self.rooms.iter().fold((0, 0), |(p, s), r| {
            let (rp, rs) = r.track_counts();
            (p + rp, s + rs)
        })
    }

    /// Called when a participant left (or a room was created empty): an empty room closes
    /// once it has been empty for its empty timeout. At most one timer runs per room; it
    /// waits out the rest of the timeout when the room emptied again meanwhile, and stops
    /// when someone is in the room (their leave arms it again) or the room is gone.
    pub fn release(self: &Arc<Self>, room: &Arc<Room>) {
        if !room.is_empty() || !self.is_current(room) {
            return;
        }
        let timeout = room.settings.empty_timeout;
        if timeout.is_zero() {
            self.remove_if_empty(room);
            return;
        }
        if !room.arm_close_timer() {
            return; // one is already waiting
        }
        let manager = self.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let closed = room.closed();
            tokio::pin!(closed);
            let mut wait = timeout;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // Deleted meanwhile: nothing left to wait for.
                    _ = &mut closed => break,
                }
                if !manager.is_current(&room) {
                    break;
                }
                match room.empty_for() {
                    Some(empty) if empty >= timeout => {
                        manager.remove_if_empty(&room);
                        break;
                    }
                    Some(empty) => wait = timeout - empty,
                    None => break,
                }
            }
            room.disarm_close_timer();
            // A leave that came while the timer was still armed relied on it: look again.
            manager.release(&room);
        });
    }

    /// Whether `room` is the one registered under its name (not deleted or replaced).
    fn is_current(&self, room: &Arc<Room>) -> bool {
        self.rooms
            .get(&room.name)
            .is_some_and(|r| Arc::ptr_eq(r.value(), room))
    }

    fn remove_if_empty(&self, room: &Arc<Room>) {
        let removed = self.rooms.remove_if(&room.name, |_, r| {
            Arc::ptr_eq(r, room) && r.close_if_empty(r.settings.empty_timeout)
        });
        if removed.is_some() {
            tracing::info!(room = %room.name, sid = %room.sid, "room closed");
        }
    }
}

fn validate_room_name(name: &str) -> Result<(), RoomError> {
    if name.trim().is_empty() {
        return Err(RoomError::InvalidArgument("the room name is empty".into()));
    }
    if name.len() > MAX_ROOM_NAME {
        return Err(RoomError::InvalidArgument(format!(
            "the room name is longer than {MAX_ROOM_NAME} bytes"
        )));
    }
    Ok(())
}
