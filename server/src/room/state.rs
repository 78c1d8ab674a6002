//! One room: its participants and publications, behind one mutex that is never held across
//! an await. Methods decide under the lock and message participants (bounded outboxes,
//! `try_send`) and the room's worker (`try_send` commands) without blocking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prism_proto::signal::{
    self as pb, AddTrackRequest, DisconnectReason, JoinResponse, ParticipantInfo, SignalResponse,
    TrackInfo, TrackKind, TrackSource, participant_info::State, signal_response::Message,
};
use tokio::sync::mpsc;

use super::events::{self, EventBus};
use super::member::{JoinSpec, Member};
use super::{RoomError, RoomSettings, new_sid, unix_now};
use crate::media::layers::{LayerRequest, LayerSize};
use crate::media::receiver::DeclaredLayer;
use crate::transport::{ConnId, MediaKind, SubscribeSpec, WorkerHandle};

pub(super) struct Publication {
    pub(super) info: TrackInfo,
    pub(super) publisher_sid: String,
    publisher_conn: ConnId,
    /// The publisher's id for the track (msid track id) — the worker's key.
    track_id: String,
}

#[derive(Default)]
pub(super) struct State_ {
    pub(super) members: HashMap<String, Member>,
    pub(super) by_identity: HashMap<String, String>,
    pub(super) publications: HashMap<String, Publication>,
    closed: bool,
    /// Since when nobody is in the room (None while someone is).
    empty_since: Option<Instant>,
}

pub struct Room {
    pub sid: String,
    pub name: String,
    pub created_at: i64,
    pub worker: WorkerHandle,
    pub settings: RoomSettings,
    events: Arc<EventBus>,
    state: Mutex<State_>,
    /// An empty-room timer is waiting (see `RoomManager::release`).
    close_timer: AtomicBool,
    /// Becomes true when the room closes; wakes its timer.
    closed_signal: tokio::sync::watch::Sender<bool>,
}

/// What a participant gets on joining.
#[derive(Debug)]
pub struct Joined {
    pub participant_sid: String,
    pub response: JoinResponse,
}

pub(super) fn message(m: Message) -> SignalResponse {
    SignalResponse { message: Some(m) }
}

impl Room {
    pub fn new(
        name: String,
        worker: WorkerHandle,
        settings: RoomSettings,
        events: Arc<EventBus>,
    ) -> Self {
        Self {
            sid: new_sid("RM"),
            name,
            created_at: unix_now(),
            worker,
            settings,
            events,
            state: Mutex::new(State_ {
                empty_since: Some(Instant::now()),
                ..State_::default()
            }),
            close_timer: AtomicBool::new(false),
            closed_signal: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Resolves once the room is closed.
    pub(super) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed_signal.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// Claims the room's empty-room timer; false when one is already waiting.
    pub(super) fn arm_close_timer(&self) -> bool {
        !self.close_timer.swap(true, Ordering::AcqRel)
    }

    pub(super) fn disarm_close_timer(&self) {
        self.close_timer.store(false, Ordering::Release);
    }

    /// How long the room has been empty; `None` while someone is in it.
    pub(super) fn empty_for(&self) -> Option<Duration> {
        let s = self.lock();
        if !s.members.is_empty() {
            return None;
        }
        Some(s.empty_since.map_or(Duration::MAX, |t| t.elapsed()))
    }

    /// Emits an event about this room. Called with the lock held, so the room's events are
    /// emitted in the order they happened.
    pub(super) fn emit(
        &self,
        s: &State_,
        kind: &str,
        participant: Option<ParticipantInfo>,
        track: Option<TrackInfo>,
        reason: Option<DisconnectReason>,
    ) {
        self.events.emit(events::event(
            kind,
            self.room_info(s),
            participant,
            track,
            reason,
        ));
    }

    /// Announces the room (`room_started`); called once, by the manager that created it.
    pub(super) fn started(&self) {
        let s = self.lock();
        self.emit(&s, events::ROOM_STARTED, None, None, None);
    }

    /// The room as the control plane describes it.
    pub fn info(&self) -> pb::Room {
        self.room_info(&self.lock())
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        // A panic while holding the lock would be a bug; keep serving the rest of the room.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn participant_count(&self) -> usize {
        self.lock().members.len()
    }

    /// Tracks published in the room, and subscriptions to them.
    pub fn track_counts(&self) -> (usize, usize) {
        let s = self.lock();
        let subscribed = s.members.values().map(|m| m.subscriptions.len()).sum();
        (s.publications.len(), subscribed)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().members.is_empty()
    }

    /// Marks the room closed if nobody has been in it for `min_empty`; true when it is closed.
    pub(super) fn close_if_empty(&self, min_empty: Duration) -> bool {
        let mut s = self.lock();
        if s.closed {
            return true;
        }
        let empty_long_enough =
            s.members.is_empty() && s.empty_since.is_none_or(|t| t.elapsed() >= min_empty);
        if empty_long_enough {
            s.closed = true;
            self.emit(&s, events::ROOM_FINISHED, None, None, None);
            self.closed_signal.send_replace(true);
        }
        s.closed
    }

    /// Closes the room now, disconnecting everyone in it with `reason`.
    pub(super) fn close(&self, reason: DisconnectReason) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.closed = true;
        let sids: Vec<String> = s.members.keys().cloned().collect();
        for sid in sids {
            self.remove_member(&mut s, &sid, reason);
        }
        self.emit(&s, events::ROOM_FINISHED, None, None, None);
        self.closed_signal.send_replace(true);
    }

    /// The participant with this identity.
    pub fn participant(&self, identity: &str) -> Option<ParticipantInfo> {
        let s = self.lock();
        let sid = s.by_identity.get(identity)?;
        s.members.get(sid).map(|m| m.info.clone())
    }

    /// A participant's permissions now (they may change while it is connected).
    pub fn permission(&self, participant_sid: &str) -> Option<pb::ParticipantPermission> {
        self.lock()
            .members
            .get(participant_sid)
            .map(|m| m.permission())
    }

    pub(super) fn sid_of(s: &State_, identity: &str) -> Result<String, RoomError> {
        s.by_identity
            .get(identity)
            .cloned()
            .ok_or_else(|| RoomError::IdentityNotFound(identity.to_owned()))
    }

    /// The sid of the participant with this identity.
    pub fn participant_sid(&self, identity: &str) -> Result<String, RoomError> {
        Self::sid_of(&self.lock(), identity)
    }

    /// Disconnects a participant, telling it why.
    pub fn remove_participant(
        &self,
        identity: &str,
        reason: DisconnectReason,
    ) -> Result<(), RoomError> {
        let mut s = self.lock();
        let sid = Self::sid_of(&s, identity)?;
        self.remove_member(&mut s, &sid, reason);
        Ok(())
    }

    pub fn participants(&self) -> Vec<ParticipantInfo> {
        self.lock()
            .members
            .values()
            .map(|m| m.info.clone())
            .collect()
    }

    fn room_info(&self, s: &State_) -> pb::Room {
        pb::Room {
            sid: self.sid.clone(),
            name: self.name.clone(),
            metadata: self.settings.metadata.clone(),
            num_participants: s.members.len() as u32,
            creation_time: self.created_at,
            empty_timeout: u32::try_from(self.settings.empty_timeout.as_secs()).unwrap_or(u32::MAX),
            max_participants: self.settings.max_participants,
        }
    }

    /// Adds a participant whose connection `conn` is already open on this room's worker.
    /// Someone already there under the same identity is replaced.
    pub fn join(
        &self,
        spec: JoinSpec,
        conn: ConnId,
        outbox: mpsc::Sender<SignalResponse>,
    ) -> Result<Joined, RoomError> {
        let mut s = self.lock();
        if s.closed {
            return Err(RoomError::RoomClosed(self.name.clone()));
        }
        if let Some(old_sid) = s.by_identity.get(&spec.identity).cloned() {
            self.remove_member(&mut s, &old_sid, DisconnectReason::DuplicateIdentity);
        }
        let max = self.settings.max_participants;
        if max > 0 && s.members.len() as u32 >= max {
            return Err(RoomError::RoomFull(self.name.clone(), max));
        }
        let sid = new_sid("PA");
        let member = Member::new(sid.clone(), &spec, conn, outbox);
        let others: Vec<ParticipantInfo> = s.members.values().map(|m| m.info.clone()).collect();
        for other in s.members.values() {
            other.send(message(Message::ParticipantJoined(pb::ParticipantJoined {
                participant: Some(member.info.clone()),
            })));
        }
        let response = JoinResponse {
            room: None,
            participant: Some(member.info.clone()),
            other_participants: others,
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            ice_servers: vec![],
            auto_subscribe: spec.auto_subscribe,
            ping_interval_ms: 5_000,
        };
        let subscribe_all = spec.auto_subscribe && spec.permission.can_subscribe;
        s.by_identity.insert(spec.identity.clone(), sid.clone());
        let info = member.info.clone();
        s.members.insert(sid.clone(), member);
        s.empty_since = None;
        self.emit(&s, events::PARTICIPANT_JOINED, Some(info), None, None);
        if subscribe_all {
            let sids: Vec<String> = s.publications.keys().cloned().collect();
            for track_sid in sids {
                self.subscribe_locked(&mut s, &sid, &track_sid);
            }
        }
        let room = self.room_info(&s);
        tracing::info!(room = %self.name, participant = %sid, identity = %spec.identity, "participant joined");
        Ok(Joined {
            participant_sid: sid,
            response: JoinResponse {
                room: Some(room),
                ..response
            },
        })
    }

    /// Removes a participant (it left, or its connection died) and tells everyone else.
    pub fn leave(&self, participant_sid: &str, reason: DisconnectReason) {
        let mut s = self.lock();
        self.remove_member(&mut s, participant_sid, reason);
    }

    fn remove_member(&self, s: &mut State_, sid: &str, reason: DisconnectReason) {
        let Some(member) = s.members.remove(sid) else {
            return;
        };
        if s.by_identity.get(&member.info.identity).map(String::as_str) == Some(sid) {
            s.by_identity.remove(&member.info.identity);
        }
        // Told only when someone else pushed it out; one that left knows.
        if reason != DisconnectReason::ClientInitiated
            && reason != DisconnectReason::SignalingClosed
        {
            member.send(message(Message::Leave(pb::LeaveResponse {
                reason: reason as i32,
                message: format!("disconnected: {}", reason.as_str_name()),
            })));
        }
        let gone: Vec<String> = s
            .publications
            .iter()
            .filter(|(_, p)| p.publisher_sid == sid)
            .map(|(k, _)| k.clone())
            .collect();
        for track_sid in gone {
            let Some(p) = s.publications.remove(&track_sid) else {
                continue;
            };
            self.emit(
                s,
                events::TRACK_UNPUBLISHED,
                Some(member.info.clone()),
                Some(p.info),
                None,
            );
            for m in s.members.values_mut() {
                m.subscriptions.remove(&track_sid);
                m.send(message(Message::TrackUnpublished(pb::TrackUnpublished {
                    participant_sid: sid.to_owned(),
                    track_sid: track_sid.clone(),
                })));
            }
        }
        for m in s.members.values() {
            m.send(message(Message::ParticipantLeft(pb::ParticipantLeft {
                participant_sid: sid.to_owned(),
                identity: member.info.identity.clone(),
                reason: reason as i32,
            })));
        }
        if s.members.is_empty() {
            s.empty_since = Some(Instant::now());
        }
        let mut info = member.info;
        info.state = State::Disconnected as i32;
        self.emit(s, events::PARTICIPANT_LEFT, Some(info), None, Some(reason));
        // The worker drops everything forwarded from or to this connection.
        self.worker.close(member.conn);
        tracing::info!(room = %self.name, participant = %sid, reason = reason.as_str_name(), "participant left");
    }

    pub fn set_active(&self, participant_sid: &str) {
        let mut s = self.lock();
        let Some(m) = s.members.get_mut(participant_sid) else {
            return;
        };
        if m.info.state == State::Active as i32 {
            return;
        }
        m.info.state = State::Active as i32;
        let info = m.info.clone();
        for (sid, other) in &s.members {
            if sid != participant_sid {
                other.send(message(Message::ParticipantUpdated(
                    pb::ParticipantUpdated {
                        participant: Some(info.clone()),
                    },
                )));
            }
        }
        self.emit(&s, events::PARTICIPANT_UPDATED, Some(info), None, None);
    }

    /// The participant announced a track: publish it now (its media follows).
    pub fn add_track(
        &self,
        participant_sid: &str,
        request: AddTrackRequest,
    ) -> Result<TrackInfo, RoomError> {
        let mut s = self.lock();
        let m = s
            .members
            .get(participant_sid)
            .ok_or(RoomError::ParticipantNotFound)?;
        if !m.permission().can_publish {
            return Err(RoomError::NotAllowed("this token cannot publish".into()));
        }
        if request.cid.is_empty() {
            return Err(RoomError::NotAllowed("addTrack needs a cid".into()));
        }
        let kind = match TrackKind::try_from(request.kind) {
            Ok(TrackKind::Audio) => MediaKind::Audio,
            Ok(TrackKind::Video) => MediaKind::Video,
            _ => {
                return Err(RoomError::NotAllowed(
                    "addTrack kind must be AUDIO or VIDEO".into(),
                ));
            }
        };
        if s.publications
            .values()
            .any(|p| p.publisher_sid == participant_sid && p.track_id == request.cid)
        {
            return Err(RoomError::NotAllowed(format!(
                "track {:?} is already published",
                request.cid
            )));
        }
        // Bounded: a participant cannot grow the room without limit.
        if m.info.tracks.len() >= 32 {
            return Err(RoomError::NotAllowed("too many published tracks".into()));
        }
        let cid = request.cid.clone();
        let mime = request.mime_type.clone();
        Ok(self.publish_locked(&mut s, participant_sid, &cid, kind, &mime, None, request))
    }

    /// The first packets of a participant's track arrived: publish it to the room and
    /// subscribe everyone who auto-subscribes.
    pub fn track_opened(
        &self,
        participant_sid: &str,
        track_id: &str,
        kind: MediaKind,
        mime_type: &str,
        rid: Option<&str>,
    ) {
        let mut s = self.lock();
        let Some(m) = s.members.get_mut(participant_sid) else {
            return;
        };
        if !m.permission().can_publish {
            let _ = self.worker.unpublish(m.conn, track_id.to_owned());
            return;
        }
        // A further simulcast layer of a published track only updates its info.
        if let Some(existing) = s
            .publications
            .values_mut()
            .find(|p| p.publisher_sid == participant_sid && p.track_id == track_id)
        {
            if existing.info.mime_type.is_empty() {
                existing.info.mime_type = mime_type.to_owned();
            }
            if let Some(rid) = rid
                && !existing.info.layers.iter().any(|l| l.rid == rid)
            {
                existing.info.layers.push(pb::VideoLayer {
                    rid: rid.to_owned(),
                    ..Default::default()
                });
            }
            // Keep the participant's own copy of the track info in step.
            let info = existing.info.clone();
            if let Some(t) = s
                .members
                .get_mut(participant_sid)
                .and_then(|m| m.info.tracks.iter_mut().find(|t| t.sid == info.sid))
            {
                *t = info;
            }
            return;
        }
        self.publish_locked(
            &mut s,
            participant_sid,
            track_id,
            kind,
            mime_type,
            rid,
            AddTrackRequest::default(),
        );
    }

    /// Creates the publication, tells everyone, subscribes the auto-subscribers.
    #[allow(clippy::too_many_arguments)]
    fn publish_locked(
        &self,
        s: &mut State_,
        participant_sid: &str,
        track_id: &str,
        kind: MediaKind,
        mime_type: &str,
        rid: Option<&str>,
        meta: AddTrackRequest,
    ) -> TrackInfo {
        let video = kind == MediaKind::Video;
        let mut layers = meta.layers.clone();
        if let Some(rid) = rid
            && !layers.iter().any(|l| l.rid == rid)
        {
            layers.push(pb::VideoLayer {
                rid: rid.to_owned(),
                ..Default::default()
            });
        }
        let info = TrackInfo {
            sid: new_sid("TR"),
            cid: track_id.to_owned(),
            kind: if video {
                TrackKind::Video
            } else {
                TrackKind::Audio
            } as i32,
            source: if meta.source != 0 {
                meta.source
            } else if video {
                TrackSource::Camera as i32
            } else {
                TrackSource::Microphone as i32
            },
            name: meta.name,
            mime_type: mime_type.to_owned(),
            muted: meta.muted,
            simulcast: rid.is_some() || meta.layers.len() > 1,
            width: meta.width,
            height: meta.height,
            layers,
        };
        let Some(m) = s.members.get_mut(participant_sid) else {
            return info;
        };
        m.info.tracks.push(info.clone());
        let publisher_conn = m.conn;
        let track_sid = info.sid.clone();
        tracing::info!(room = %self.name, participant = %participant_sid, track = %track_sid, mime = mime_type, "track published");
        s.publications.insert(
            track_sid.clone(),
            Publication {
                info: info.clone(),
                publisher_sid: participant_sid.to_owned(),
                publisher_conn,
                track_id: track_id.to_owned(),
            },
        );
        for other in s.members.values() {
            other.send(message(Message::TrackPublished(pb::TrackPublished {
                participant_sid: participant_sid.to_owned(),
                track: Some(info.clone()),
            })));
        }
        let publisher = s.members.get(participant_sid).map(|m| m.info.clone());
        self.emit(
            s,
            events::TRACK_PUBLISHED,
            publisher,
            Some(info.clone()),
            None,
        );
        let subscribers: Vec<String> = s
            .members
            .iter()
            .filter(|(sid, m)| {
                sid.as_str() != participant_sid && m.auto_subscribe && m.permission().can_subscribe
            })
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in subscribers {
            self.subscribe_locked(s, &sid, &track_sid);
        }
        info
    }

    pub fn unpublish(&self, participant_sid: &str, track_sid: &str) -> Result<(), RoomError> {
        let mut s = self.lock();
        self.unpublish_locked(&mut s, participant_sid, track_sid)
    }

    pub(super) fn unpublish_locked(
        &self,
        s: &mut State_,
        participant_sid: &str,
        track_sid: &str,
    ) -> Result<(), RoomError> {
        let owned = s
            .publications
            .get(track_sid)
            .is_some_and(|p| p.publisher_sid == participant_sid);
        if !owned {
            return Err(RoomError::TrackNotFound(track_sid.to_owned()));
        }
        let Some(p) = s.publications.remove(track_sid) else {
            return Err(RoomError::TrackNotFound(track_sid.to_owned()));
        };
        if let Some(m) = s.members.get_mut(participant_sid) {
            m.info.tracks.retain(|t| t.sid != track_sid);
        }
        for m in s.members.values_mut() {
            m.subscriptions.remove(track_sid);
            m.send(message(Message::TrackUnpublished(pb::TrackUnpublished {
                participant_sid: participant_sid.to_owned(),
                track_sid: track_sid.to_owned(),
            })));
        }
        let publisher = s.members.get(participant_sid).map(|m| m.info.clone());
        self.emit(
            s,
            events::TRACK_UNPUBLISHED,
            publisher,
            Some(p.info.clone()),
            None,
        );
        self.worker
            .unpublish(p.publisher_conn, p.track_id)
            .map_err(|e| RoomError::Transport(e.to_string()))
    }

    pub fn mute(
        &self,
        participant_sid: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<TrackInfo, RoomError> {
        let mut s = self.lock();
        self.mute_locked(&mut s, participant_sid, track_sid, muted)
    }

    /// Mutes or unmutes a participant's track on its behalf (control plane).
    pub fn mute_track(
        &self,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<TrackInfo, RoomError> {
        let mut s = self.lock();
        let sid = Self::sid_of(&s, identity)?;
        self.mute_locked(&mut s, &sid, track_sid, muted)
    }

    fn mute_locked(
        &self,
        s: &mut State_,
        participant_sid: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<TrackInfo, RoomError> {
        let p = s
            .publications
            .get_mut(track_sid)
            .filter(|p| p.publisher_sid == participant_sid)
            .ok_or_else(|| RoomError::TrackNotFound(track_sid.to_owned()))?;
        p.info.muted = muted;
        let track = p.info.clone();
        if let Some(m) = s.members.get_mut(participant_sid)
            && let Some(t) = m.info.tracks.iter_mut().find(|t| t.sid == track_sid)
        {
            t.muted = muted;
        }
        for m in s.members.values() {
            m.send(message(Message::TrackMuted(pb::TrackMuted {
                participant_sid: participant_sid.to_owned(),
                track_sid: track_sid.to_owned(),
                muted,
            })));
        }
        let publisher = s.members.get(participant_sid).map(|m| m.info.clone());
        self.emit(s, events::TRACK_MUTED, publisher, Some(track.clone()), None);
        Ok(track)
    }

    /// Explicit subscribe or unsubscribe. Unknown track sids are an error; nothing changes then.
    pub fn update_subscription(
        &self,
        participant_sid: &str,
        track_sids: &[String],
        subscribe: bool,
    ) -> Result<(), RoomError> {
        let mut s = self.lock();
        let m = s
            .members
            .get(participant_sid)
            .ok_or(RoomError::ParticipantNotFound)?;
        if subscribe && !m.permission().can_subscribe {
            return Err(RoomError::NotAllowed(
                "this participant may not subscribe".into(),
            ));
        }
        if let Some(missing) = track_sids.iter().find(|t| !s.publications.contains_key(*t)) {
            return Err(RoomError::TrackNotFound(missing.clone()));
        }
        for track_sid in track_sids {
            if subscribe {
                self.subscribe_locked(&mut s, participant_sid, track_sid);
            } else if let Some(m) = s.members.get_mut(participant_sid)
                && m.subscriptions.remove(track_sid)
            {
                let conn = m.conn;
                self.worker
                    .unsubscribe(conn, track_sid.clone())
                    .map_err(|e| RoomError::Transport(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// A subscriber says how it shows a subscribed track: stored on the subscription and
    /// handed to the worker, which picks the simulcast layer from it.
    pub fn update_track_settings(
        &self,
        participant_sid: &str,
        settings: pb::UpdateTrackSettings,
    ) -> Result<(), RoomError> {
        let mut s = self.lock();
        let m = s
            .members
            .get_mut(participant_sid)
            .ok_or(RoomError::ParticipantNotFound)?;
        if !m.subscriptions.contains(&settings.track_sid) {
            return Err(RoomError::TrackNotFound(settings.track_sid));
        }
        // Forget the settings of ended subscriptions here, so the map stays bounded by them.
        let Member {
            subscriptions,
            track_settings,
            ..
        } = m;
        track_settings.retain(|sid, _| subscriptions.contains(sid));
        let request = LayerRequest::from_settings(
            settings.quality,
            settings.width,
            settings.height,
            settings.paused,
        );
        let track_sid = settings.track_sid.clone();
        let pinned = settings.pinned;
        track_settings.insert(settings.track_sid.clone(), settings);
        let conn = m.conn;
        self.worker
            .request_layer(conn, track_sid, request, pinned)
            .map_err(|e| RoomError::Transport(e.to_string()))
    }

    /// The sid of the track `participant_sid` publishes as `track_id` (its msid track id).
    pub fn track_sid_of(&self, participant_sid: &str, track_id: &str) -> Option<String> {
        let s = self.lock();
        s.publications
            .iter()
            .find(|(_, p)| p.publisher_sid == participant_sid && p.track_id == track_id)
            .map(|(sid, _)| sid.clone())
    }

    /// The latest settings a subscriber sent for a track, if it is subscribed.
    pub fn track_settings(
        &self,
        participant_sid: &str,
        track_sid: &str,
    ) -> Option<pb::UpdateTrackSettings> {
        let s = self.lock();
        let m = s.members.get(participant_sid)?;
        m.subscriptions
            .contains(track_sid)
            .then(|| m.track_settings.get(track_sid).cloned())
            .flatten()
    }

    /// The server's speaker detection has news about a participant's audio: tell everyone,
    /// the speaker included (clients show their own speaking state too).
    pub fn speaker_changed(&self, participant_sid: &str, level: f32, active: bool) {
        let s = self.lock();
        if !s.members.contains_key(participant_sid) {
            return;
        }
        let update = message(Message::SpeakersChanged(pb::SpeakersChanged {
            speakers: vec![pb::SpeakerInfo {
                participant_sid: participant_sid.to_owned(),
                level,
                active,
            }],
        }));
        for m in s.members.values() {
            m.send(update.clone());
        }
    }

    /// The worker dropped a subscription (publisher gone, or it failed).
    pub fn subscription_ended(&self, participant_sid: &str, track_sid: &str) {
        if let Some(m) = self.lock().members.get_mut(participant_sid) {
            m.subscriptions.remove(track_sid);
        }
    }

    pub(super) fn subscribe_locked(&self, s: &mut State_, subscriber_sid: &str, track_sid: &str) {
        let Some(p) = s.publications.get(track_sid) else {
            return;
        };
        if p.publisher_sid == subscriber_sid {
            return; // nobody receives their own tracks back
        }
        let publisher_sid = p.publisher_sid.clone();
        let spec = SubscribeSpec {
            subscriber: ConnId(0),
            publisher: p.publisher_conn,
            track_id: p.track_id.clone(),
            track_sid: track_sid.to_owned(),
            publisher_sid: publisher_sid.clone(),
            layers: declared_layers(&p.info.layers),
            screen_share: p.info.source == pb::TrackSource::ScreenShare as i32,
        };
        let Some(m) = s.members.get_mut(subscriber_sid) else {
            return;
        };
        if !m.subscriptions.insert(track_sid.to_owned()) {
            return;
        }
        if let Err(e) = self.worker.subscribe(SubscribeSpec {
            subscriber: m.conn,
            ..spec
        }) {
            m.subscriptions.remove(track_sid);
            m.send(message(Message::Subscription(pb::SubscriptionUpdate {
                track_sid: track_sid.to_owned(),
                participant_sid: publisher_sid,
                state: pb::subscription_update::State::Failed as i32,
                error: e.to_string(),
            })));
        }
    }
}

/// The layers a publisher declared, as the worker ranks them (those with a RID).
fn declared_layers(layers: &[pb::VideoLayer]) -> Vec<DeclaredLayer> {
    layers
        .iter()
        .filter(|l| !l.rid.is_empty())
        .map(|l| DeclaredLayer {
            rid: l.rid.clone(),
            size: LayerSize {
                width: l.width,
                height: l.height,
            },
        })
        .collect()
}
