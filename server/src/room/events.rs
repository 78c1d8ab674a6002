//! Room events (room started/finished, participant joined/left/updated, track
//! published/unpublished/muted) as the control plane describes them. Rooms emit them while
//! holding their lock, so each room's events leave in the order they happened; every sink
//! takes them without blocking (bounded queues, `try_send`).

use std::sync::Arc;

use prism_proto::control::RoomEvent;
use prism_proto::signal::{self as pb, DisconnectReason, ParticipantInfo, TrackInfo};
use tokio::sync::broadcast;

use super::{new_sid, unix_now};

pub const ROOM_STARTED: &str = "room_started";
pub const ROOM_FINISHED: &str = "room_finished";
pub const PARTICIPANT_JOINED: &str = "participant_joined";
pub const PARTICIPANT_LEFT: &str = "participant_left";
pub const PARTICIPANT_UPDATED: &str = "participant_updated";
pub const TRACK_PUBLISHED: &str = "track_published";
pub const TRACK_UNPUBLISHED: &str = "track_unpublished";
pub const TRACK_MUTED: &str = "track_muted";

/// How many events a slow [`EventBus::subscribe`]r may fall behind before it is told it lost
/// some.
const WATCH_CAPACITY: usize = 4096;

/// Something that takes room events. `emit` runs under a room's lock: it must not block.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: &Arc<RoomEvent>);
}

/// Fans room events out to the configured sinks (webhooks) and to watchers (WatchRoom).
pub struct EventBus {
    sinks: Vec<Arc<dyn EventSink>>,
    watchers: broadcast::Sender<Arc<RoomEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl EventBus {
    pub fn new(sinks: Vec<Arc<dyn EventSink>>) -> Self {
        Self {
            sinks,
            watchers: broadcast::channel(WATCH_CAPACITY).0,
        }
    }

    /// Every event of every room from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RoomEvent>> {
        self.watchers.subscribe()
    }

    pub(super) fn emit(&self, event: RoomEvent) {
        let event = Arc::new(event);
        for sink in &self.sinks {
            sink.emit(&event);
        }
        // No watcher is not an error.
        let _ = self.watchers.send(event);
    }
}

/// A new event about `room`.
pub(super) fn event(
    kind: &str,
    room: pb::Room,
    participant: Option<ParticipantInfo>,
    track: Option<TrackInfo>,
    reason: Option<DisconnectReason>,
) -> RoomEvent {
    RoomEvent {
        event: kind.to_owned(),
        id: new_sid("EV"),
        created_at: unix_now(),
        room: Some(room),
        participant,
        track,
        reason: reason.map_or(0, |r| r as i32),
    }
}
