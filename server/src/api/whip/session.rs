//! A WHIP or WHEP session once created: a room member with one peer connection and no
//! signaling channel. A task per session does for it what the WebSocket session does for an
//! SDK participant (publishes tracks as their media arrives, marks it active once connected,
//! passes speaker levels and ended subscriptions to the room), plus, for a WHEP viewer that
//! follows one participant, subscribing to that participant's tracks as they are published.
//! It ends on DELETE, when the connection fails or does not come up in time, or when the room
//! removes the member; then it leaves the room and forgets the session.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use prism_proto::signal::{DisconnectReason, SignalResponse, signal_response::Message as Resp};
use tokio::sync::{mpsc, oneshot, watch};

use crate::room::{Room, RoomManager};
use crate::transport::{ConnEvent, ConnId, PeerState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ingest: publishes what it sends.
    Whip,
    /// Playback: receives the room's tracks (or one participant's).
    Whep,
}

impl Kind {
    pub fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

/// What PATCH and DELETE need of a live session.
pub struct SessionEntry {
    pub kind: Kind,
    pub room: Arc<Room>,
    pub conn: ConnId,
    pub participant_sid: String,
    /// The entity tag of the session's ICE state; changes on ICE restart.
    pub etag: Mutex<String>,
    /// The offer currently applied (an ICE restart re-applies it with new credentials).
    pub offer: Mutex<String>,
    /// PATCHes of one session run one at a time (an ICE restart is a renegotiation).
    pub patching: tokio::sync::Mutex<()>,
    stop: Mutex<Option<oneshot::Sender<DisconnectReason>>>,
    done: watch::Receiver<bool>,
}

impl SessionEntry {
    /// Ends the session and waits (bounded) until it has left the room.
    pub async fn end(&self, reason: DisconnectReason) {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(stop) = stop {
            let _ = stop.send(reason);
        }
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), done.wait_for(|d| *d)).await;
    }
}

/// Every live WHIP/WHEP session of this node, by id (the last segment of its URL).
#[derive(Default)]
pub struct Sessions {
    map: DashMap<String, Arc<SessionEntry>>,
}

impl Sessions {
    pub fn get(&self, kind: Kind, room: &str, id: &str) -> Option<Arc<SessionEntry>> {
        self.map
            .get(id)
            .map(|e| e.clone())
            .filter(|e| e.kind == kind && e.room.name == room)
    }

    pub fn remove(&self, id: &str) -> Option<Arc<SessionEntry>> {
        self.map.remove(id).map(|(_, e)| e)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A member that just joined, with the channels the room and the worker talk to it on.
pub struct Joined {
    pub kind: Kind,
    pub id: String,
    pub room: Arc<Room>,
    pub conn: ConnId,
    pub participant_sid: String,
    pub etag: String,
    pub offer: String,
    pub outbox: mpsc::Receiver<SignalResponse>,
    pub events: mpsc::Receiver<ConnEvent>,
    /// WHEP: follow only this identity's tracks.
    pub follow: Option<String>,
    /// When the POST came, for the join-time histogram.
    pub started: std::time::Instant,
}

/// Registers the session and starts its task.
pub fn spawn(sessions: &Arc<Sessions>, rooms: Arc<RoomManager>, joined: Joined) {
    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = watch::channel(false);
    let entry = Arc::new(SessionEntry {
        kind: joined.kind,
        room: joined.room.clone(),
        conn: joined.conn,
        participant_sid: joined.participant_sid.clone(),
        etag: Mutex::new(joined.etag.clone()),
        offer: Mutex::new(joined.offer.clone()),
        patching: tokio::sync::Mutex::new(()),
        stop: Mutex::new(Some(stop_tx)),
        done: done_rx,
    });
    sessions.map.insert(joined.id.clone(), entry);
    let sessions = sessions.clone();
    let join_timeout = Duration::from_secs(rooms.config().room.join_timeout_secs);
    tokio::spawn(async move {
        let id = joined.id.clone();
        let room = joined.room.clone();
        let sid = joined.participant_sid.clone();
        let mut joined = joined;
        // The outbox stays open until the member left: the room may still message it.
        let reason = serve(&mut joined, stop_rx, join_timeout).await;
        tracing::info!(room = %room.name, participant = %sid, session = %id, reason = reason.as_str_name(), "whip/whep session ended");
        sessions.map.remove(&id);
        room.leave(&sid, reason);
        rooms.release(&room);
        drop(joined);
        let _ = done_tx.send(true);
    });
}

async fn serve(
    s: &mut Joined,
    mut stop: oneshot::Receiver<DisconnectReason>,
    join_timeout: Duration,
) -> DisconnectReason {
    if let Some(identity) = s.follow.clone() {
        follow_existing(s, &identity);
    }
    let deadline = tokio::time::sleep(join_timeout);
    tokio::pin!(deadline);
    let mut connected = false;
    loop {
        tokio::select! {
            reason = &mut stop => return reason.unwrap_or(DisconnectReason::ClientInitiated),
            message = s.outbox.recv() => {
                let Some(message) = message else {
                    // The room dropped the member.
                    return DisconnectReason::ParticipantRemoved;
                };
                match message.message {
                    Some(Resp::Leave(leave)) => {
                        return DisconnectReason::try_from(leave.reason)
                            .unwrap_or(DisconnectReason::ParticipantRemoved);
                    }
                    Some(Resp::TrackPublished(published)) => {
                        if let (Some(identity), Some(track)) = (s.follow.as_deref(), published.track)
                            && s.room.participant_sid(identity).ok().as_deref()
                                == Some(published.participant_sid.as_str())
                            && let Err(e) = s.room.update_subscription(&s.participant_sid, &[track.sid], true)
                        {
                            tracing::debug!(error = %e, "whep follow subscription");
                        }
                    }
                    _ => {}
                }
            }
            event = s.events.recv() => {
                let Some(event) = event else {
                    return DisconnectReason::ConnectionTimeout;
                };
                match on_event(s, event, &mut connected) {
                    Some(reason) => return reason,
                    None => continue,
                }
            }
            _ = &mut deadline, if !connected => {
                return DisconnectReason::ConnectionTimeout;
            }
        }
    }
}

/// A viewer following one participant subscribes to what it already publishes.
fn follow_existing(s: &Joined, identity: &str) {
    let Some(info) = s.room.participant(identity) else {
        return;
    };
    let tracks: Vec<String> = info.tracks.iter().map(|t| t.sid.clone()).collect();
    if !tracks.is_empty()
        && let Err(e) = s
            .room
            .update_subscription(&s.participant_sid, &tracks, true)
    {
        tracing::debug!(error = %e, "whep follow subscription");
    }
}

fn on_event(s: &Joined, event: ConnEvent, connected: &mut bool) -> Option<DisconnectReason> {
    match event {
        ConnEvent::TrackOpened {
            track_id,
            kind,
            mime_type,
            rid,
            ..
        } => {
            s.room.track_opened(
                &s.participant_sid,
                &track_id,
                kind,
                &mime_type,
                rid.as_deref(),
            );
        }
        ConnEvent::StateChanged(state) => match state {
            PeerState::Connected => {
                if !*connected {
                    let stats = &s.room.worker.stats;
                    stats.histograms.record_join(s.started.elapsed());
                }
                *connected = true;
                s.room.set_active(&s.participant_sid);
            }
            PeerState::Failed | PeerState::Closed => {
                return Some(DisconnectReason::ConnectionTimeout);
            }
            PeerState::Connecting | PeerState::Disconnected => {}
        },
        ConnEvent::SubscriptionFailed { track_sid, reason } => {
            tracing::debug!(session = s.id, track = %track_sid, %reason, "whep subscription failed");
            s.room.subscription_ended(&s.participant_sid, &track_sid);
        }
        ConnEvent::Unsubscribed { track_sid } => {
            s.room.subscription_ended(&s.participant_sid, &track_sid);
        }
        ConnEvent::SpeakerLevel { level, active, .. } => {
            s.room.speaker_changed(&s.participant_sid, level, active);
        }
        ConnEvent::Offer { .. } => {
            // Nothing can carry it: WHIP/WHEP have no signaling after the POST.
            tracing::warn!(
                session = s.id,
                "a server offer for a whip/whep session was dropped"
            );
        }
        // No channel to tell the client about layers or stream states, and no data channel.
        ConnEvent::Subscribed { .. }
        | ConnEvent::Data { .. }
        | ConnEvent::StreamState { .. }
        | ConnEvent::SubscribedLayers { .. }
        | ConnEvent::ConnectionQuality(_) => {}
    }
    None
}
