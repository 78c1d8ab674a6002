//! WatchRoom: one room's events as a server stream, from the bus every room emits into. The
//! stream ends after the room's `room_finished`, or with DATA_LOSS if the caller fell too far
//! behind to see every event.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prism_proto::control::RoomEvent;
use tokio::sync::broadcast::{self, error::RecvError};
use tonic::Status;

use crate::room::events::ROOM_FINISHED;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<RoomEvent, Status>> + Send>>;

/// The events of the room whose sid is `room_sid`, read from `events`.
pub fn room_events(events: broadcast::Receiver<Arc<RoomEvent>>, room_sid: String) -> EventStream {
    let stream = futures::stream::unfold(Some(events), move |state| {
        let room_sid = room_sid.clone();
        async move {
            let mut events = state?;
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if event.room.as_ref().is_none_or(|r| r.sid != room_sid) {
                            continue;
                        }
                        let last = event.event == ROOM_FINISHED;
                        let item = Ok(RoomEvent::clone(&event));
                        return Some((item, (!last).then_some(events)));
                    }
                    Err(RecvError::Lagged(n)) => {
                        let status = Status::data_loss(format!(
                            "the watcher fell behind and lost {n} events; watch again"
                        ));
                        return Some((Err(status), None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Box::pin(stream)
}
