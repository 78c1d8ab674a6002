//! One simulated participant: joins with its own token, publishes synthetic VP8/Opus, and
//! subscribes and measures what it receives.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use prism_client::proto::TrackKind as ProtoTrackKind;
use prism_client::rtp;
use prism_client::synthetic::{
    OpusConfig, OpusSource, SimulcastVp8, Vp8Config, Vp8Source, keyframe_size, parse_opus,
    parse_vp8,
};
use prism_client::{
    ClientError, Codec, ConnectOptions, LocalTrack, RemoteTrack, Room, RoomEvent, RoomEvents,
    SimulcastLayer, StreamState, TrackKind, TrackOptions, VideoQuality,
};
use prism_server::auth::AccessToken;
use tokio::sync::watch;

use crate::downlink::{LayerLog, QualityLog, layer_label};
use crate::scenario::{Quality, Role, Scenario};
use crate::stats::{PublishStats, TrackStats};

/// Why a participant could not join. The first three end the whole run.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Nothing answers at the server URL.
    #[error("cannot reach the server at {url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The server refused the access token (wrong API key or secret).
    #[error(
        "the server rejected the access token (HTTP {status}: {body}); check --api-key and \
         --api-secret"
    )]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// The server's explanation.
        body: String,
    },
    /// The server refused the join (room not found, not allowed, full, ...).
    #[error("the server refused the join: {0}")]
    Refused(String),
    /// The join did not complete in time.
    #[error("join timed out: {0}")]
    Timeout(String),
    /// Anything else (a WebRTC failure, a protocol error, a failed publication).
    #[error("join failed: {0}")]
    Failed(String),
    /// The token could not be minted.
    #[error("cannot mint an access token: {0}")]
    Token(String),
}

impl JoinError {
    /// Whether this error means no other participant will fare better, so the run stops.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            JoinError::Unreachable { .. }
                | JoinError::Unauthorized { .. }
                | JoinError::Refused(_)
                | JoinError::Token(_)
        )
    }

    fn classify(url: &str, e: ClientError) -> Self {
        match e {
            ClientError::Unauthorized { status, body } => JoinError::Unauthorized { status, body },
            ClientError::HttpStatus { status, body } => {
                JoinError::Refused(format!("HTTP {status}: {body}"))
            }
            ClientError::Server {
                code,
                message,
                request,
            } => JoinError::Refused(format!("{code:?} on {request}: {message}")),
            ClientError::WebSocket(e) => {
                // A failure to connect at all is an I/O error somewhere down the chain.
                let mut io = false;
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
                while let Some(err) = source {
                    io |= err.is::<std::io::Error>();
                    source = err.source();
                }
                if io {
                    JoinError::Unreachable {
                        url: url.to_owned(),
                        detail: e.to_string(),
                    }
                } else {
                    JoinError::Failed(format!("websocket: {e}"))
                }
            }
            ClientError::InvalidUrl(m) => JoinError::Unreachable {
                url: url.to_owned(),
                detail: format!("invalid URL: {m}"),
            },
            ClientError::Timeout(what) => JoinError::Timeout(format!("waiting for {what}")),
            other => JoinError::Failed(other.to_string()),
        }
    }
}

/// Run-wide counters every participant adds to, and the stop signal.
#[derive(Debug)]
pub struct RunShared {
    /// RTP packets received by every subscriber.
    pub rx_packets: AtomicU64,
    /// RTP bytes received.
    pub rx_bytes: AtomicU64,
    /// RTP packets sent by every publisher.
    pub tx_packets: AtomicU64,
    /// Flips to true when publishers should stop.
    pub stop: watch::Receiver<bool>,
    /// When the run started (time series count seconds from here).
    pub started: Instant,
}

/// Where a participant stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Not started or in progress.
    Joining,
    /// Connected and published; `connect` = token to `Room::connect` returning.
    Joined {
        /// Token to signaling join.
        connect: Duration,
    },
    /// The join failed.
    Failed(String),
    /// The server ended the session during the run.
    Disconnected(String),
}

/// One subscribed track.
#[derive(Debug)]
pub struct Subscription {
    /// The publisher's identity (or sid if it was not known).
    pub publisher: String,
    /// Track sid.
    pub track_sid: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// The measurements.
    pub stats: Mutex<TrackStats>,
    /// The layers the server forwarded (video), from its stream-state updates.
    pub layers: Mutex<LayerLog>,
}

/// One published track.
#[derive(Debug)]
pub struct Publication {
    /// Track sid.
    pub track_sid: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// Published layer name (video).
    pub layer: Option<String>,
    /// Frames (video) or packets (audio) per second it should send.
    pub target_rate: f64,
    /// The counters.
    pub stats: Mutex<PublishStats>,
}

/// Everything about one participant the runner and the report read.
#[derive(Debug)]
pub struct Participant {
    /// Room name.
    pub room: String,
    /// Identity.
    pub identity: String,
    /// What it does.
    pub role: Role,
    /// Tracks it should receive.
    pub expected_tracks: u32,
    /// When its token was minted.
    pub token_at: Mutex<Option<Instant>>,
    /// Where it stands.
    pub status: Mutex<Status>,
    /// What it receives.
    pub subscriptions: Mutex<Vec<Arc<Subscription>>>,
    /// The server's connection-quality reports on its downlink (subscribers).
    pub downlink: Mutex<QualityLog>,
    /// What it sends.
    pub publications: Mutex<Vec<Arc<Publication>>>,
}

/// Locks, ignoring poisoning (a panicked reader task leaves counters that are still useful).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Participant {
    /// Participant `index` of room `room_index`.
    pub fn new(scenario: &Scenario, room_index: u32, index: u32) -> Self {
        Self {
            room: scenario.room_name(room_index),
            identity: scenario.identity(index),
            role: scenario.role(index),
            expected_tracks: scenario.expected_tracks(index),
            token_at: Mutex::new(None),
            status: Mutex::new(Status::Joining),
            subscriptions: Mutex::new(vec![]),
            downlink: Mutex::default(),
            publications: Mutex::new(vec![]),
        }
    }

    /// Whether it joined (and is still connected).
    pub fn is_joined(&self) -> bool {
        matches!(*lock(&self.status), Status::Joined { .. })
    }

    /// Joins, publishes and starts receiving; returns the room handle once joined. Media
    /// and event tasks keep running until the room is left or `shared.stop` flips.
    pub async fn join(
        self: &Arc<Self>,
        scenario: &Scenario,
        shared: Arc<RunShared>,
    ) -> Result<Room, JoinError> {
        let result = tokio::time::timeout(
            Duration::from_secs_f64(scenario.join_timeout_secs),
            self.try_join(scenario, shared),
        )
        .await
        .unwrap_or_else(|_| {
            Err(JoinError::Timeout(format!(
                "no join within {} s",
                scenario.join_timeout_secs
            )))
        });
        if let Err(e) = &result {
            *lock(&self.status) = Status::Failed(e.to_string());
        }
        result
    }

    async fn try_join(
        self: &Arc<Self>,
        scenario: &Scenario,
        shared: Arc<RunShared>,
    ) -> Result<Room, JoinError> {
        let token = AccessToken::new(&scenario.api_key, &scenario.api_secret)
            .identity(&self.identity)
            .room(&self.room)
            .to_jwt()
            .map_err(|e| JoinError::Token(e.to_string()))?;
        let token_at = Instant::now();
        *lock(&self.token_at) = Some(token_at);
        let max_video = scenario.layout.max_video_tracks;
        let options = ConnectOptions {
            auto_subscribe: self.role.subscribes && max_video.is_none(),
            join_timeout: Duration::from_secs_f64(scenario.join_timeout_secs),
            publish_timeout: Duration::from_secs_f64(scenario.join_timeout_secs),
            ..ConnectOptions::default()
        };
        let (room, events) = Room::connect(&scenario.url, &token, options)
            .await
            .map_err(|e| JoinError::classify(&scenario.url, e))?;
        let connect = token_at.elapsed();

        // Events first, so no subscription is missed while we publish.
        let selector = self
            .role
            .subscribes
            .then(|| Selector::new(max_video, &room));
        tokio::spawn(self.clone().handle_events(
            room.clone(),
            events,
            selector,
            // What the event handler reads of the scenario (the layout, the layers' names).
            scenario.clone(),
            token_at,
            shared.clone(),
        ));

        if self.role.publishes_video && scenario.video.simulcast {
            let layers: Vec<SimulcastLayer> = scenario
                .video
                .layers
                .iter()
                .map(|l| SimulcastLayer {
                    rid: l.name.clone(),
                    width: u32::from(l.width),
                    height: u32::from(l.height),
                    bitrate_bps: l.bitrate_bps,
                })
                .collect();
            let track = room
                .publish_track(TrackOptions::simulcast_video(
                    "loadtest-video",
                    Codec::Vp8,
                    layers,
                ))
                .await
                .map_err(|e| JoinError::classify(&scenario.url, e))?;
            let names: Vec<&str> = scenario
                .video
                .layers
                .iter()
                .map(|l| l.name.as_str())
                .collect();
            let top = scenario.video.published_layer();
            let publication = Arc::new(Publication {
                track_sid: track.sid().to_owned(),
                kind: TrackKind::Video,
                layer: Some(names.join("+")),
                target_rate: f64::from(top.fps),
                stats: Mutex::default(),
            });
            lock(&self.publications).push(publication.clone());
            let source = SimulcastVp8::with_configs(scenario.video.layers.iter().enumerate().map(
                |(i, l)| {
                    let config = Vp8Config {
                        width: l.width,
                        height: l.height,
                        fps: l.fps,
                        bitrate_bps: l.bitrate_bps,
                        keyframe_interval: Duration::from_secs_f64(
                            scenario.video.keyframe_interval_secs,
                        ),
                        mtu: scenario.video.mtu,
                        layer: i as u8,
                        ..Vp8Config::default()
                    };
                    (l.name.clone(), config)
                },
            ));
            tokio::spawn(publish_simulcast(
                track,
                source,
                publication,
                shared.clone(),
            ));
        } else if self.role.publishes_video {
            let layer = scenario.video.published_layer().clone();
            let track = room
                .publish_track(TrackOptions::video(
                    "loadtest-video",
                    Codec::Vp8,
                    u32::from(layer.width),
                    u32::from(layer.height),
                ))
                .await
                .map_err(|e| JoinError::classify(&scenario.url, e))?;
            let publication = Arc::new(Publication {
                track_sid: track.sid().to_owned(),
                kind: TrackKind::Video,
                layer: Some(layer.name.clone()),
                target_rate: f64::from(layer.fps),
                stats: Mutex::default(),
            });
            lock(&self.publications).push(publication.clone());
            let config = Vp8Config {
                width: layer.width,
                height: layer.height,
                fps: layer.fps,
                bitrate_bps: layer.bitrate_bps,
                keyframe_interval: Duration::from_secs_f64(scenario.video.keyframe_interval_secs),
                mtu: scenario.video.mtu,
                ..Vp8Config::default()
            };
            tokio::spawn(publish_video(track, config, publication, shared.clone()));
        }
        if self.role.publishes_audio {
            let track = room
                .publish_track(TrackOptions::audio("loadtest-audio"))
                .await
                .map_err(|e| JoinError::classify(&scenario.url, e))?;
            let publication = Arc::new(Publication {
                track_sid: track.sid().to_owned(),
                kind: TrackKind::Audio,
                layer: None,
                target_rate: 50.0,
                stats: Mutex::default(),
            });
            lock(&self.publications).push(publication.clone());
            let config = OpusConfig {
                bitrate_bps: scenario.audio.bitrate_bps,
                ..OpusConfig::default()
            };
            tokio::spawn(publish_audio(track, config, publication, shared.clone()));
        }
        *lock(&self.status) = Status::Joined { connect };
        Ok(room)
    }

    async fn handle_events(
        self: Arc<Self>,
        room: Room,
        mut events: RoomEvents,
        mut selector: Option<Selector>,
        scenario: Scenario,
        token_at: Instant,
        shared: Arc<RunShared>,
    ) {
        let (qualities, video) = (&scenario.layout.qualities, &scenario.video);
        // Video tracks shown so far: the layout's qualities apply in this order.
        let mut shown = 0usize;
        if let Some(s) = selector.as_mut() {
            s.catch_up(&room).await;
        }
        // The server says why it drops a session in an `error` just before closing signaling
        // (e.g. a peer connection that did not connect in time); keep it for the report.
        let mut last_error: Option<String> = None;
        // Stream states that came before their track's subscription event.
        let mut early_states: HashMap<String, Vec<(Instant, StreamState, String)>> = HashMap::new();
        while let Some(event) = events.recv().await {
            match event {
                RoomEvent::Error(e) => last_error = Some(e.to_string()),
                RoomEvent::ConnectionQuality(report) => {
                    lock(&self.downlink).record(&report, Instant::now(), shared.started);
                }
                RoomEvent::StreamStateChanged { track_sid, state } => {
                    let now = Instant::now();
                    let label = layer_label(&state, |w, h| {
                        let size = (u16::try_from(w).ok()?, u16::try_from(h).ok()?);
                        Some(video.layer_for(size.0, size.1)?.name.clone())
                    });
                    let subscription = lock(&self.subscriptions)
                        .iter()
                        .find(|s| s.track_sid == track_sid)
                        .cloned();
                    match subscription {
                        Some(s) => lock(&s.layers).record(&state, label, now, shared.started),
                        None => {
                            let early = early_states.entry(track_sid).or_default();
                            if early.len() < 16 {
                                early.push((now, state, label));
                            }
                        }
                    }
                }
                RoomEvent::TrackPublished { track, .. } => {
                    if let Some(s) = selector.as_mut() {
                        s.consider(&room, &track.sid, track.kind()).await;
                    }
                }
                RoomEvent::TrackSubscribed {
                    participant_sid,
                    remote,
                    ..
                } => {
                    let publisher = room
                        .participants()
                        .into_iter()
                        .find(|p| p.sid == participant_sid)
                        .map_or(participant_sid, |p| p.identity);
                    let subscription = Arc::new(Subscription {
                        publisher,
                        track_sid: remote.sid().to_owned(),
                        kind: remote.kind(),
                        stats: Mutex::new(TrackStats::new(token_at)),
                        layers: Mutex::default(),
                    });
                    for (at, state, label) in early_states.remove(remote.sid()).unwrap_or_default()
                    {
                        lock(&subscription.layers).record(&state, label, at, shared.started);
                    }
                    lock(&self.subscriptions).push(subscription.clone());
                    if remote.kind() == TrackKind::Video {
                        let quality = qualities
                            .get(shown)
                            .or(qualities.last())
                            .copied()
                            .unwrap_or_default();
                        shown += 1;
                        if quality != Quality::High {
                            let remote = remote.clone();
                            tokio::spawn(async move {
                                let wanted = match quality {
                                    Quality::Low => VideoQuality::Low,
                                    Quality::Medium => VideoQuality::Medium,
                                    Quality::High => VideoQuality::High,
                                };
                                if let Err(e) = remote.set_quality(wanted).await {
                                    tracing::warn!(error = %e, "setting the quality failed");
                                }
                            });
                        }
                    }
                    tokio::spawn(read_track(remote, subscription, shared.clone()));
                }
                RoomEvent::Disconnected { reason, message } => {
                    let mut status = lock(&self.status);
                    if matches!(*status, Status::Joined { .. }) && !*shared.stop.borrow() {
                        let mut why = format!("{reason:?}");
                        if !message.is_empty() {
                            why = format!("{why} {message}");
                        }
                        if let Some(e) = &last_error {
                            why = format!("{why} (last server error: {e})");
                        }
                        *status = Status::Disconnected(why);
                    }
                    break;
                }
                _ => {}
            }
        }
    }
}

/// Chooses tracks when the layout limits the video tracks shown (explicit subscriptions).
struct Selector {
    max_video: Option<u32>,
    video: u32,
    seen: HashSet<String>,
    own_sid: String,
}

impl Selector {
    fn new(max_video: Option<u32>, room: &Room) -> Self {
        Self {
            max_video,
            video: 0,
            seen: HashSet::new(),
            own_sid: room.local_participant().sid,
        }
    }

    /// Tracks that were published before we joined.
    async fn catch_up(&mut self, room: &Room) {
        for p in room.participants() {
            if p.sid == self.own_sid {
                continue;
            }
            for t in &p.tracks {
                self.consider(room, &t.sid, t.kind()).await;
            }
        }
    }

    async fn consider(&mut self, room: &Room, sid: &str, kind: ProtoTrackKind) {
        // With auto-subscribe the server does it all.
        let Some(max) = self.max_video else { return };
        if !self.seen.insert(sid.to_owned()) {
            return;
        }
        if kind == ProtoTrackKind::Video {
            if self.video >= max {
                return;
            }
            self.video += 1;
        }
        if let Err(e) = room.subscribe(&[sid]).await {
            tracing::warn!(%sid, error = %e, "subscribe failed");
        }
    }
}

/// Reads one subscribed track until it ends, recording every packet.
async fn read_track(remote: RemoteTrack, subscription: Arc<Subscription>, shared: Arc<RunShared>) {
    let video = remote.kind() == TrackKind::Video;
    while let Ok(packet) = remote.read_rtp().await {
        let now = Instant::now();
        let wall = SystemTime::now();
        let payload = &packet.payload;
        let size = 12 + payload.len() as u64;
        shared.rx_packets.fetch_add(1, Ordering::Relaxed);
        shared.rx_bytes.fetch_add(size, Ordering::Relaxed);
        let stamp = if video {
            parse_vp8(payload)
        } else {
            parse_opus(payload)
        };
        let resolution = if video { keyframe_size(payload) } else { None };
        let mut s = lock(&subscription.stats);
        s.first_packet_at.get_or_insert(now);
        s.last_packet_at = Some(now);
        s.packets += 1;
        s.bytes += size;
        if let Some(r) = resolution {
            s.resolution = Some(r);
            s.keyframes += 1;
        }
        match stamp {
            Some(stamp) if stamp.intact => {
                s.sequence
                    .record(stamp.layer, stamp.counter, resolution.is_some());
                s.latency.record(stamp.latency(wall));
            }
            _ => s.bad_payloads += 1,
        }
    }
}

async fn publish_video(
    track: LocalTrack,
    config: Vp8Config,
    publication: Arc<Publication>,
    shared: Arc<RunShared>,
) {
    let mut source = Vp8Source::new(config);
    let mut requests = track.keyframe_requests();
    let mut tick = tokio::time::interval(source.frame_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = shared.stop.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let mut requested = 0;
        while requests.try_recv().is_some() {
            requested += 1;
        }
        if requested > 0 {
            source.request_keyframe();
        }
        let packets = source.next_frame();
        let mut tally = FrameTally::new(&packets);
        for packet in &packets {
            match track.write_rtp(packet).await {
                Ok(()) => tally.sent(packet),
                Err(ClientError::Closed) => return,
                Err(_) => tally.errors += 1,
            }
        }
        tally.record(&publication, &shared, requested);
    }
}

/// What one frame tick of a publisher sent, counted into its publication.
#[derive(Default)]
struct FrameTally {
    packets: u64,
    bytes: u64,
    errors: u64,
    keyframes: u64,
}

impl FrameTally {
    /// A tally for a frame (`packets`, one layer's), counting it as a keyframe if it is one.
    fn new(packets: &[rtp::Packet]) -> Self {
        let mut tally = Self::default();
        tally.add_frame(packets);
        tally
    }

    fn add_frame(&mut self, packets: &[rtp::Packet]) {
        let keyframe = packets
            .first()
            .is_some_and(|p| keyframe_size(&p.payload).is_some());
        self.keyframes += u64::from(keyframe);
    }

    fn sent(&mut self, packet: &rtp::Packet) {
        self.packets += 1;
        self.bytes += packet.payload.len() as u64;
    }

    fn record(self, publication: &Publication, shared: &RunShared, keyframe_requests: u64) {
        shared.tx_packets.fetch_add(self.packets, Ordering::Relaxed);
        let mut s = lock(&publication.stats);
        s.packets += self.packets;
        s.bytes += self.bytes;
        s.write_errors += self.errors;
        s.keyframe_requests += keyframe_requests;
        s.keyframes += self.keyframes;
        s.frames += 1;
    }
}

/// Publishes every layer of a simulcast track at the lowest layer's frame rate, answering
/// keyframe requests per layer; layers the server paused (dynacast) skip their frames and
/// resume on a keyframe. Counts what all layers sent as one publication.
async fn publish_simulcast(
    track: LocalTrack,
    mut source: SimulcastVp8,
    publication: Arc<Publication>,
    shared: Arc<RunShared>,
) {
    let mut requests = track.keyframe_requests();
    let mut tick = tokio::time::interval(source.frame_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = shared.stop.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let mut requested = 0;
        while let Some(request) = requests.try_recv() {
            requested += 1;
            if let Some(rid) = track.rid_of_ssrc(request.media_ssrc()) {
                source.request_keyframe(rid);
            }
        }
        let mut tally = FrameTally::default();
        for (index, packets) in source.next_frames(|rid| track.layer_active(rid)) {
            let rid = source.rid(index);
            tally.add_frame(&packets);
            for packet in &packets {
                match track.write_layer_rtp(rid, packet).await {
                    Ok(true) => tally.sent(packet),
                    Ok(false) => {}
                    Err(ClientError::Closed) => return,
                    Err(_) => tally.errors += 1,
                }
            }
        }
        tally.record(&publication, &shared, requested);
    }
}

async fn publish_audio(
    track: LocalTrack,
    config: OpusConfig,
    publication: Arc<Publication>,
    shared: Arc<RunShared>,
) {
    let mut source = OpusSource::new(config);
    let mut tick = tokio::time::interval(source.packet_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = shared.stop.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let packet = source.next_packet();
        let result = track.write_rtp(&packet).await;
        let mut s = lock(&publication.stats);
        match result {
            Ok(()) => {
                s.packets += 1;
                s.frames += 1;
                s.bytes += packet.payload.len() as u64;
                shared.tx_packets.fetch_add(1, Ordering::Relaxed);
            }
            Err(ClientError::Closed) => return,
            Err(_) => s.write_errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_resolution_of_synthetic_vp8() {
        let mut source = Vp8Source::new(Vp8Config {
            width: 1280,
            height: 720,
            ..Vp8Config::default()
        });
        let first = source.next_frame();
        assert_eq!(keyframe_size(&first[0].payload), Some((1280, 720)));
        assert_eq!(keyframe_size(&first[1].payload), None);
        let delta = source.next_frame();
        assert_eq!(keyframe_size(&delta[0].payload), None);
    }
}
