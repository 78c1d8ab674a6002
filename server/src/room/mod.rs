//! Rooms and their participants: who is in a room, what each publishes, who subscribes to
//! what. This layer is a lookup table over the media that workers own: it decides, the worker
//! of the room carries it out. Every room lives on one worker, so its forwarding never
//! crosses threads.

mod member;
mod state;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rand::RngExt;
use rand::distr::Alphanumeric;

use crate::config::Config;
use crate::transport::Transport;
pub use member::JoinSpec;
pub use state::{Joined, Room};

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
    #[error("track {0:?} not found")]
    TrackNotFound(String),
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("the media worker cannot take the request: {0}")]
    Transport(String),
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

/// Every room of this node, by name.
pub struct RoomManager {
    rooms: DashMap<String, Arc<Room>>,
    transport: Arc<Transport>,
    config: Arc<Config>,
}

impl RoomManager {
    pub fn new(config: Arc<Config>, transport: Arc<Transport>) -> Arc<Self> {
        Arc::new(Self {
            rooms: DashMap::new(),
            transport,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn get(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.get(name).map(|r| r.clone())
    }

    /// The room to join: the existing one, or a new one on the least loaded worker when rooms
    /// are created on first join.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Room>, RoomError> {
        if let Some(room) = self.get(name) {
            return Ok(room);
        }
        if !self.config.room.auto_create {
            return Err(RoomError::RoomNotFound(name.to_owned()));
        }
        let room = self
            .rooms
            .entry(name.to_owned())
            .or_insert_with(|| {
                let room = Arc::new(Room::new(
                    name.to_owned(),
                    self.transport.pick(),
                    self.config.room.max_participants,
                ));
                tracing::info!(room = %name, sid = %room.sid, worker = room.worker.index, "room created");
                room
            })
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

    /// Called when a participant left: an empty room closes after the empty timeout, unless
    /// someone joined meanwhile.
    pub fn release(self: &Arc<Self>, room: &Arc<Room>) {
        if !room.is_empty() {
            return;
        }
        let timeout = Duration::from_secs(self.config.room.empty_timeout_secs);
        if timeout.is_zero() {
            self.remove_if_empty(room);
            return;
        }
        let manager = self.clone();
        let room = room.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            manager.remove_if_empty(&room);
        });
    }

    fn remove_if_empty(&self, room: &Arc<Room>) {
        let removed = self.rooms.remove_if(&room.name, |_, r| {
            Arc::ptr_eq(r, room) && r.close_if_empty()
        });
        if removed.is_some() {
            tracing::info!(room = %room.name, sid = %room.sid, "room closed");
        }
    }
}
