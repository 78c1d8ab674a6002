//! A connection to one room: the signaling socket, the one peer connection, and the task that
//! drives both.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prism_proto::signal::{
    AddTrackRequest, DisconnectReason, JoinResponse, LeaveRequest, MuteTrackRequest,
    ParticipantInfo, Ping, Room as RoomInfo, SessionDescription, SubscribedLayersUpdate, TrackInfo,
    UnpublishTrackRequest, UpdateSubscriptionRequest, signal_request, signal_response,
    subscription_update,
};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;
use rtc::statistics::stats::RTCStatsType;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState,
    RTCSessionDescription, SettingEngineBuilder,
};

use crate::data::{DataChannels, DataOptions};
use crate::error::{ClientError, Result};
use crate::events::{ConnectionState, RoomEvent, RoomEvents};
use crate::layers::{SettingsChange, TrackSettings};
use crate::negotiation::{Negotiator, RemoteOffer};
use crate::remote::{RemoteTrack, RtxRepair};
use crate::rtcp::{self, KeyframeRequestForwarder};
use crate::signaling::{self, Incoming, SignalReader, SignalWriter};
use crate::state::RoomState;
use crate::subscriber::SubscriberBook;
use crate::track::{LocalTrack, LocalTrackShared, TrackKind, TrackOptions};

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Subscribe to every track in the room automatically (default true). With false, use
    /// [`Room::subscribe`].
    pub auto_subscribe: bool,
    /// Capacity of the [`RoomEvents`] queue (default 1024).
    pub event_capacity: usize,
    /// How long to wait for the server's `join` (default 10 s).
    pub join_timeout: Duration,
    /// How long [`Room::publish_track`] waits for the server's `trackPublished` (default 10 s).
    pub publish_timeout: Duration,
    /// How long an offer waits for ICE gathering before it is sent anyway (default 5 s).
    pub ice_gathering_timeout: Duration,
    /// Local UDP addresses for the peer connection. Default: `127.0.0.1:0` when the server
    /// host is a loopback address or `localhost`, `0.0.0.0:0` (every interface) otherwise.
    pub udp_addrs: Option<Vec<String>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            auto_subscribe: true,
            event_capacity: 1024,
            join_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(10),
            ice_gathering_timeout: Duration::from_secs(5),
            udp_addrs: None,
        }
    }
}

/// Requests from handles to the room task.
pub(crate) enum Command {
    Publish {
        shared: Arc<LocalTrackShared>,
        request: AddTrackRequest,
        reply: oneshot::Sender<Result<oneshot::Receiver<TrackInfo>>>,
    },
    Unpublish {
        cid: String,
        reply: oneshot::Sender<Result<()>>,
    },
    Mute {
        sid: String,
        muted: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    Subscription {
        track_sids: Vec<String>,
        subscribe: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    TrackSettings {
        sid: String,
        change: SettingsChange,
        reply: oneshot::Sender<Result<()>>,
    },
    Leave {
        reply: oneshot::Sender<Result<()>>,
    },
    FeedbackSent {
        reply: oneshot::Sender<Result<HashMap<String, FeedbackSent>>>,
    },
}

/// Keyframe and retransmission requests this client's engine sent for one subscribed track
/// (from the peer connection's inbound RTP statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackSent {
    /// NACK packets sent.
    pub nacks: u32,
    /// PLIs sent.
    pub plis: u32,
    /// FIRs sent.
    pub firs: u32,
}

/// What handles read without asking the task.
#[derive(Default)]
struct Snapshot {
    state: RoomState,
    remote_tracks: HashMap<String, RemoteTrack>,
    subscriber: SubscriberBook,
    rtt: Option<Duration>,
    connection_quality: Option<prism_proto::signal::ConnectionQualityUpdate>,
    connection: Option<ConnectionState>,
    closed: bool,
}

type Shared = Arc<Mutex<Snapshot>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Snapshot> {
    // A panic while holding this lock cannot leave the snapshot half-written in a way that
    // matters more than losing it; keep going.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

struct RoomInner {
    commands: mpsc::Sender<Command>,
    shared: Shared,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    publish_timeout: Duration,
    data: DataChannels,
}

/// A connection to a Prism room. Cheap to clone; every clone is the same connection.
///
/// The connection ends when [`leave`](Self::leave) is called, when the server disconnects us,
/// or when the last clone is dropped (which leaves the room in the background).
#[derive(Clone)]
pub struct Room {
    inner: Arc<RoomInner>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = lock(&self.inner.shared);
        f.debug_struct("Room")
            .field("room", &snap.state.room.name)
            .field("participant", &snap.state.local.sid)
            .finish()
    }
}

impl Room {
    /// Connects to `url` (http(s):// or ws(s)://, the server's base URL) with an access token,
    /// waits for the server's `join`, sets up the peer connection and sends the first offer.
    ///
    /// Fails with [`ClientError::Unauthorized`] if the server rejects the token.
    pub async fn connect(
        url: &str,
        token: &str,
        options: ConnectOptions,
    ) -> Result<(Room, RoomEvents)> {
        let ws_url = signaling::rtc_url(url, token, options.auto_subscribe)?;
        let (writer, mut reader) = signaling::connect(&ws_url).await?;
        let join = match tokio::time::timeout(options.join_timeout, reader.next()).await {
            Err(_) => return Err(ClientError::Timeout("join")),
            Ok(Incoming::Message(message)) => match *message {
                signal_response::Message::Join(join) => join,
                signal_response::Message::Error(e)
                    if e.code() == prism_proto::signal::ErrorCode::RoomFull =>
                {
                    return Err(ClientError::RoomFull(e.message));
                }
                signal_response::Message::Error(e) => {
                    return Err(ClientError::Server {
                        code: e.code(),
                        message: e.message,
                        request: e.request,
                    });
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected join first, got {other:?}"
                    )));
                }
            },
            Ok(Incoming::Malformed(e)) => return Err(e),
            Ok(Incoming::Closed(reason)) => {
                return Err(ClientError::Protocol(format!(
                    "signaling closed before join: {}",
                    reason.unwrap_or_default()
                )));
            }
        };

        let udp_addrs = options
            .udp_addrs
            .clone()
            .unwrap_or_else(|| vec![default_udp_addr(&ws_url).to_owned()]);
        let (pc_tx, pc_rx) = mpsc::channel(64);
        let (gathering_tx, gathering_rx) = watch::channel(RTCIceGatheringState::New);
        let pc = build_peer_connection(
            &join,
            udp_addrs,
            PcHandler {
                events: pc_tx,
                gathering: gathering_tx,
            },
        )
        .await?;
        let (event_tx, event_rx) = mpsc::channel(options.event_capacity.max(1));
        let data = match DataChannels::create(&pc, &event_tx).await {
            Ok(data) => data,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };

        let ping_interval = match join.ping_interval_ms {
            0 => Duration::from_secs(5),
            ms => Duration::from_millis(ms.into()),
        };
        let shared: Shared = Arc::new(Mutex::new(Snapshot {
            state: RoomState::from_join(&join),
            ..Default::default()
        }));
        let (cmd_tx, cmd_rx) = mpsc::channel(32);
        let engine = Engine {
            handle_commands: cmd_tx.downgrade(),
            pc,
            writer,
            reader,
            commands: cmd_rx,
            pc_events: pc_rx,
            gathering: gathering_rx,
            events: event_tx,
            shared: shared.clone(),
            negotiator: Negotiator::default(),
            local_tracks: HashMap::new(),
            pending_publications: HashMap::new(),
            ping_interval,
            gathering_timeout: options.ice_gathering_timeout,
        };
        let task = tokio::spawn(engine.run());
        let room = Room {
            inner: Arc::new(RoomInner {
                commands: cmd_tx,
                shared,
                task: tokio::sync::Mutex::new(Some(task)),
                publish_timeout: options.publish_timeout,
                data,
            }),
        };
        Ok((room, RoomEvents::new(event_rx)))
    }

    /// This participant as the server described it (sid, identity, its tracks).
    pub fn local_participant(&self) -> ParticipantInfo {
        lock(&self.inner.shared).state.local.clone()
    }

    /// The room as the server described it at join.
    pub fn room_info(&self) -> RoomInfo {
        lock(&self.inner.shared).state.room.clone()
    }

    /// The other participants now.
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        lock(&self.inner.shared)
            .state
            .participants
            .values()
            .cloned()
            .collect()
    }

    /// Subscribed tracks whose media has started arriving.
    pub fn remote_tracks(&self) -> Vec<RemoteTrack> {
        lock(&self.inner.shared)
            .remote_tracks
            .values()
            .cloned()
            .collect()
    }

    /// The subscribed track with this sid, if its media has started arriving.
    pub fn remote_track(&self, track_sid: &str) -> Option<RemoteTrack> {
        lock(&self.inner.shared)
            .remote_tracks
            .get(track_sid)
            .cloned()
    }

    /// Signaling round-trip time measured by the last ping.
    pub fn rtt(&self) -> Option<Duration> {
        lock(&self.inner.shared).rtt
    }

    /// The server's latest connection-quality report for our downlink (grade, estimate,
    /// allocation); None until one arrived.
    pub fn connection_quality(&self) -> Option<prism_proto::signal::ConnectionQualityUpdate> {
        lock(&self.inner.shared).connection_quality
    }

    /// State of the peer connection.
    pub fn connection_state(&self) -> ConnectionState {
        lock(&self.inner.shared)
            .connection
            .unwrap_or(ConnectionState::New)
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.shared).closed
    }

    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(reply))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Publishes a track: announces it (`add_track`), adds it to the peer connection,
    /// renegotiates, and waits for the server's `trackPublished` so the result knows its sid.
    pub async fn publish_track(&self, options: TrackOptions) -> Result<LocalTrack> {
        let stream_id = {
            let snap = lock(&self.inner.shared);
            if snap.closed {
                return Err(ClientError::Closed);
            }
            snap.state.local.sid.clone()
        };
        let shared = LocalTrackShared::new(&options, stream_id)?;
        let request = AddTrackRequest {
            cid: shared.cid.clone(),
            name: options.name.clone(),
            kind: options.kind().to_proto() as i32,
            source: options.source as i32,
            width: options.width,
            height: options.height,
            mime_type: options.codec.mime_type().to_owned(),
            muted: false,
            layers: options.simulcast.iter().map(|l| l.to_proto()).collect(),
        };
        let published = self
            .command(|reply| Command::Publish {
                shared: shared.clone(),
                request,
                reply,
            })
            .await?;
        // The track is bound to its sender now; forward its keyframe requests until it is not.
        tokio::spawn(shared.clone().forward_keyframe_requests());
        match tokio::time::timeout(self.inner.publish_timeout, published).await {
            Ok(Ok(info)) => {
                // Media written before DTLS is up has no keys and is dropped (with a warning
                // per packet inside webrtc-rs): return once the connection can carry it.
                let deadline = tokio::time::Instant::now() + self.inner.publish_timeout;
                while self.connection_state() != ConnectionState::Connected {
                    if self.is_closed() {
                        return Err(ClientError::Closed);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ClientError::Timeout("peer connection"));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(LocalTrack {
                    shared,
                    info,
                    commands: self.inner.commands.downgrade(),
                })
            }
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                let cid = shared.cid.clone();
                let _ = self
                    .command(|reply| Command::Unpublish { cid, reply })
                    .await;
                Err(ClientError::Timeout("trackPublished"))
            }
        }
    }

    /// What we asked the server to forward of a subscribed video track (see
    /// [`RemoteTrack::set_quality`] and its siblings).
    pub fn track_settings(&self, track_sid: &str) -> TrackSettings {
        lock(&self.inner.shared).subscriber.settings(track_sid)
    }

    /// Replaces the settings of a subscribed video track (layer choice, paused). Settings for
    /// a track not yet subscribed are sent once the server reports the subscription.
    pub async fn set_track_settings(&self, track_sid: &str, settings: TrackSettings) -> Result<()> {
        let sid = track_sid.to_owned();
        self.command(|reply| Command::TrackSettings {
            sid,
            change: SettingsChange::Replace(settings),
            reply,
        })
        .await
    }

    /// Subscribes to tracks (for rooms joined with `auto_subscribe: false`).
    pub async fn subscribe<S: AsRef<str>>(&self, track_sids: &[S]) -> Result<()> {
        self.update_subscription(track_sids, true).await
    }

    /// Unsubscribes from tracks.
    pub async fn unsubscribe<S: AsRef<str>>(&self, track_sids: &[S]) -> Result<()> {
        self.update_subscription(track_sids, false).await
    }

    async fn update_subscription<S: AsRef<str>>(
        &self,
        track_sids: &[S],
        subscribe: bool,
    ) -> Result<()> {
        let track_sids = track_sids.iter().map(|s| s.as_ref().to_owned()).collect();
        self.command(|reply| Command::Subscription {
            track_sids,
            subscribe,
            reply,
        })
        .await
    }

    /// Sends a data message to the other participants of the room (all of them, or those
    /// whose identities are listed), on the reliable or the lossy data channel. They receive
    /// [`RoomEvent::DataReceived`] with our identity. Waits for the channel to open (at most
    /// the publish timeout). Payloads are limited to
    /// [`MAX_DATA_PAYLOAD`](crate::MAX_DATA_PAYLOAD) bytes.
    pub async fn publish_data<S: AsRef<str>>(
        &self,
        payload: impl Into<bytes::Bytes>,
        reliable: bool,
        destination_identities: &[S],
    ) -> Result<()> {
        let options = DataOptions {
            lossy: !reliable,
            destination_identities: destination_identities
                .iter()
                .map(|s| s.as_ref().to_owned())
                .collect(),
            topic: String::new(),
        };
        self.publish_data_with(payload, options).await
    }

    /// [`publish_data`](Self::publish_data) with every option, the topic included.
    pub async fn publish_data_with(
        &self,
        payload: impl Into<bytes::Bytes>,
        options: DataOptions,
    ) -> Result<()> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        self.inner
            .data
            .publish(payload.into(), options, self.inner.publish_timeout)
            .await
    }

    /// NACKs, PLIs and FIRs this client has sent, per subscribed track sid, as the engine
    /// counts them.
    pub async fn feedback_sent(&self) -> Result<HashMap<String, FeedbackSent>> {
        self.command(|reply| Command::FeedbackSent { reply }).await
    }

    /// Leaves the room: sends `leave`, closes the socket and the peer connection, and waits
    /// for the background task to end. Calling it again is harmless.
    pub async fn leave(&self) -> Result<()> {
        let result = match self.command(|reply| Command::Leave { reply }).await {
            Err(ClientError::Closed) => Ok(()),
            other => other,
        };
        if let Some(task) = self.inner.task.lock().await.take() {
            let _ = task.await;
        }
        result
    }
}

fn default_udp_addr(url: &url::Url) -> &'static str {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if loopback { "127.0.0.1:0" } else { "0.0.0.0:0" }
}

async fn build_peer_connection(
    join: &JoinResponse,
    udp_addrs: Vec<String>,
    handler: PcHandler,
) -> Result<Arc<dyn PeerConnection>> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?
        .with(rtcp::slot(), KeyframeRequestForwarder::default());
    let ice_servers = join
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect();
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .build();
    let setting_engine = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media_engine)
        .with_setting_engine(setting_engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(handler))
        .with_udp_addrs(udp_addrs)
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// Peer connection callbacks, run on the connection's driver task: they never block it.
struct PcHandler {
    events: mpsc::Sender<PcEvent>,
    gathering: watch::Sender<RTCIceGatheringState>,
}

enum PcEvent {
    Track(Arc<dyn TrackRemote>),
    State(RTCPeerConnectionState),
}

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

// Written out as `async_trait` expands it, to avoid a dependency for four methods.
impl PeerConnectionEventHandler for PcHandler {
    fn on_ice_gathering_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCIceGatheringState,
    ) -> BoxFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.gathering.send_replace(state);
        })
    }

    fn on_connection_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCPeerConnectionState,
    ) -> BoxFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if self.events.try_send(PcEvent::State(state)).is_err() {
                tracing::warn!(?state, "connection state change dropped");
            }
        })
    }

    fn on_track<'life0, 'async_trait>(
        &'life0 self,
        track: Arc<dyn TrackRemote>,
    ) -> BoxFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            // Must not be lost, must not block the driver: hand it over from a task. The task
            // ends as soon as the room task takes it or is gone.
            let events = self.events.clone();
            tokio::spawn(async move {
                let _ = events.send(PcEvent::Track(track)).await;
            });
        })
    }
}

/// Why the room task stopped.
enum Exit {
    Leave(oneshot::Sender<Result<()>>),
    HandlesDropped,
    ServerLeave(DisconnectReason, String),
    SignalingClosed(Option<String>),
}

/// The room task: owns the socket, the peer connection and all negotiation.
struct Engine {
    /// Given to remote tracks so they can send commands; weak so it does not keep us alive.
    handle_commands: mpsc::WeakSender<Command>,
    pc: Arc<dyn PeerConnection>,
    writer: SignalWriter,
    reader: SignalReader,
    commands: mpsc::Receiver<Command>,
    pc_events: mpsc::Receiver<PcEvent>,
    gathering: watch::Receiver<RTCIceGatheringState>,
    events: mpsc::Sender<RoomEvent>,
    shared: Shared,
    negotiator: Negotiator,
    /// Our publications by cid.
    local_tracks: HashMap<String, Arc<LocalTrackShared>>,
    /// `publish_track` calls waiting for their `trackPublished`, by cid.
    pending_publications: HashMap<String, oneshot::Sender<TrackInfo>>,
    ping_interval: Duration,
    gathering_timeout: Duration,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Engine {
    async fn run(mut self) {
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        self.renegotiate().await;

        let exit = loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => break Exit::HandlesDropped,
                    Some(Command::Leave { reply }) => break Exit::Leave(reply),
                    Some(command) => self.handle_command(command).await,
                },
                incoming = self.reader.next() => match incoming {
                    Incoming::Message(message) => {
                        if let Some(exit) = self.handle_signal(*message).await {
                            break exit;
                        }
                    }
                    Incoming::Malformed(e) => {
                        tracing::warn!(error = %e, "malformed signaling message");
                        self.emit(RoomEvent::Error(e));
                    }
                    Incoming::Closed(reason) => break Exit::SignalingClosed(reason),
                },
                Some(event) = self.pc_events.recv() => self.handle_pc_event(event).await,
                _ = ping.tick() => {
                    let ping = signal_request::Message::Ping(Ping { timestamp: now_ms() });
                    if let Err(e) = self.writer.send(ping).await {
                        tracing::debug!(error = %e, "ping failed");
                    }
                }
            }
        };
        self.shutdown(exit).await;
    }

    fn emit(&self, event: RoomEvent) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            tracing::warn!(?event, "room event queue full; event dropped");
        }
    }

    async fn shutdown(mut self, exit: Exit) {
        let (reason, message, reply) = match exit {
            Exit::Leave(reply) => (
                DisconnectReason::ClientInitiated,
                String::new(),
                Some(reply),
            ),
            Exit::HandlesDropped => (DisconnectReason::ClientInitiated, String::new(), None),
            Exit::ServerLeave(reason, message) => (reason, message, None),
            Exit::SignalingClosed(reason) => (
                DisconnectReason::SignalingClosed,
                reason.unwrap_or_default(),
                None,
            ),
        };
        if reason == DisconnectReason::ClientInitiated {
            let _ = self
                .writer
                .send(signal_request::Message::Leave(LeaveRequest {}))
                .await;
        }
        self.writer.close().await;
        let closed = self.pc.close().await;
        {
            let mut snap = lock(&self.shared);
            snap.closed = true;
            snap.remote_tracks.clear();
            snap.connection = Some(ConnectionState::Closed);
        }
        self.pending_publications.clear();
        self.emit(RoomEvent::Disconnected { reason, message });
        if let Some(reply) = reply {
            let _ = reply.send(closed.map_err(ClientError::from));
        }
    }

    async fn send(&mut self, message: signal_request::Message) -> Result<()> {
        self.writer.send(message).await
    }

    async fn handle_command(&mut self, command: Command) {
        match command {
            Command::Publish {
                shared,
                request,
                reply,
            } => {
                let result = self.publish(shared, request).await;
                let _ = reply.send(result);
            }
            Command::Unpublish { cid, reply } => {
                let result = self.unpublish(&cid).await;
                let _ = reply.send(result);
            }
            Command::Mute { sid, muted, reply } => {
                let message = signal_request::Message::Mute(MuteTrackRequest {
                    track_sid: sid,
                    muted,
                });
                let _ = reply.send(self.send(message).await);
            }
            Command::Subscription {
                track_sids,
                subscribe,
                reply,
            } => {
                let message = signal_request::Message::Subscription(UpdateSubscriptionRequest {
                    track_sids,
                    subscribe,
                });
                let _ = reply.send(self.send(message).await);
            }
            Command::TrackSettings { sid, change, reply } => {
                let message = lock(&self.shared).subscriber.change(&sid, change);
                let result = match message {
                    Some(m) => self.send(signal_request::Message::TrackSettings(m)).await,
                    None => Ok(()),
                };
                let _ = reply.send(result);
            }
            Command::Leave { reply } => {
                // Handled by the loop; unreachable here, answer anyway.
                let _ = reply.send(Ok(()));
            }
            Command::FeedbackSent { reply } => {
                let report = self
                    .pc
                    .get_stats(std::time::Instant::now(), StatsSelector::None)
                    .await;
                let mut by_track: HashMap<String, FeedbackSent> = HashMap::new();
                for entry in report.iter_by_type(RTCStatsType::InboundRTP) {
                    if let RTCStatsReportEntry::InboundRtp(s) = entry {
                        let f = by_track.entry(s.track_identifier.clone()).or_default();
                        f.nacks += s.nack_count;
                        f.plis += s.pli_count;
                        f.firs += s.fir_count;
                    }
                }
                let _ = reply.send(Ok(by_track));
            }
        }
    }

    async fn publish(
        &mut self,
        shared: Arc<LocalTrackShared>,
        request: AddTrackRequest,
    ) -> Result<oneshot::Receiver<TrackInfo>> {
        // The server must know the track before the offer that carries it.
        self.send(signal_request::Message::AddTrack(request))
            .await?;
        let transceiver = self
            .pc
            .add_transceiver_from_track(
                shared.track.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    // A new send-only transceiver: never reuse one that receives a subscription.
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        let sender = transceiver
            .sender()
            .await?
            .ok_or_else(|| ClientError::Protocol("transceiver without sender".into()))?;
        *shared.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        *shared.transceiver.lock().unwrap_or_else(|e| e.into_inner()) = Some(transceiver);
        let (tx, rx) = oneshot::channel();
        self.pending_publications.insert(shared.cid.clone(), tx);
        self.local_tracks.insert(shared.cid.clone(), shared);
        self.renegotiate().await;
        Ok(rx)
    }

    async fn unpublish(&mut self, cid: &str) -> Result<()> {
        let Some(shared) = self.local_tracks.remove(cid) else {
            return Ok(());
        };
        self.pending_publications.remove(cid);
        let sid = lock(&self.shared)
            .state
            .local
            .tracks
            .iter()
            .find(|t| t.cid == cid)
            .map(|t| t.sid.clone());
        if let Some(track_sid) = sid {
            self.send(signal_request::Message::Unpublish(UnpublishTrackRequest {
                track_sid,
            }))
            .await?;
        }
        let sender = shared
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(sender) = sender {
            self.pc.remove_track(&sender).await?;
        }
        self.renegotiate().await;
        Ok(())
    }

    /// Offers now if no offer is outstanding; otherwise once the outstanding one is answered.
    async fn renegotiate(&mut self) {
        if let Some(id) = self.negotiator.request_offer() {
            self.send_offer(id).await;
        }
    }

    async fn send_offer(&mut self, id: u32) {
        if let Err(e) = self.try_send_offer(id).await {
            tracing::warn!(error = %e, id, "offer failed");
            self.negotiator.offer_failed();
            self.emit(RoomEvent::Error(e));
        }
    }

    async fn try_send_offer(&mut self, id: u32) -> Result<()> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.wait_for_gathering().await;
        let sdp = self.local_sdp().await?;
        self.send(signal_request::Message::Offer(SessionDescription {
            r#type: "offer".into(),
            sdp,
            id,
        }))
        .await
    }

    async fn local_sdp(&self) -> Result<String> {
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| ClientError::Protocol("no local description".into()))
    }

    /// Waits until ICE gathering is complete, so the SDP carries our candidates (no trickle).
    /// After the first negotiation it normally is already.
    async fn wait_for_gathering(&mut self) {
        let wait = self
            .gathering
            .wait_for(|s| *s == RTCIceGatheringState::Complete);
        if tokio::time::timeout(self.gathering_timeout, wait)
            .await
            .is_err()
        {
            tracing::warn!("ICE gathering not complete; sending the description anyway");
        }
    }

    fn negotiation_done(&self) {
        for track in self.local_tracks.values() {
            track.invalidate_payload_type();
        }
    }

    async fn handle_answer(&mut self, answer: SessionDescription) {
        if !self.negotiator.accepts_answer(answer.id) {
            tracing::debug!(id = answer.id, "stale answer ignored");
            return;
        }
        let applied = match RTCSessionDescription::answer(answer.sdp) {
            Ok(desc) => self.pc.set_remote_description(desc).await,
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            // Leave the failed offer behind: back to stable, and try again.
            if let Ok(rollback) = RTCSessionDescription::rollback(None) {
                let _ = self.pc.set_local_description(rollback).await;
            }
            self.emit(RoomEvent::Error(e.into()));
        }
        self.negotiation_done();
        if let Some(next) = self.negotiator.on_answer(answer.id) {
            self.send_offer(next).await;
        }
    }

    async fn handle_remote_offer(&mut self, offer: SessionDescription) {
        let glare = self.negotiator.on_remote_offer() == RemoteOffer::RollbackThenAnswer;
        if let Err(e) = self.answer_remote_offer(offer, glare).await {
            tracing::warn!(error = %e, "answering the server's offer failed");
            if self.pc.pending_remote_description().await.is_some()
                && let Ok(rollback) = RTCSessionDescription::rollback(None)
            {
                let _ = self.pc.set_remote_description(rollback).await;
            }
            self.emit(RoomEvent::Error(e));
        }
        self.negotiation_done();
        if let Some(id) = self.negotiator.after_remote_offer() {
            self.send_offer(id).await;
        }
    }

    async fn answer_remote_offer(&mut self, offer: SessionDescription, glare: bool) -> Result<()> {
        // Polite peer: our crossed offer yields. Also roll back a local offer the negotiator
        // gave up on (its send failed) so the connection is stable before applying theirs.
        if glare || self.pc.pending_local_description().await.is_some() {
            tracing::debug!(id = offer.id, "glare: rolling back our offer");
            self.pc
                .set_local_description(RTCSessionDescription::rollback(None)?)
                .await?;
        }
        self.pc
            .set_remote_description(RTCSessionDescription::offer(offer.sdp)?)
            .await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        self.wait_for_gathering().await;
        let sdp = self.local_sdp().await?;
        self.send(signal_request::Message::Answer(SessionDescription {
            r#type: "answer".into(),
            sdp,
            id: offer.id,
        }))
        .await
    }

    /// Handles one server message; returns why to stop, if it ends the session.
    async fn handle_signal(&mut self, message: signal_response::Message) -> Option<Exit> {
        use signal_response::Message as M;
        match message {
            M::Answer(answer) => self.handle_answer(answer).await,
            M::Offer(offer) => self.handle_remote_offer(offer).await,
            M::Trickle(candidate) => {
                if !candidate.candidate.is_empty() {
                    let init = RTCIceCandidateInit {
                        candidate: candidate.candidate,
                        sdp_mid: Some(candidate.sdp_mid),
                        sdp_mline_index: u16::try_from(candidate.sdp_mline_index).ok(),
                        ..Default::default()
                    };
                    if let Err(e) = self.pc.add_ice_candidate(init).await {
                        self.emit(RoomEvent::Error(e.into()));
                    }
                }
            }
            M::Join(_) => self.emit(RoomEvent::Error(ClientError::Protocol(
                "unexpected second join".into(),
            ))),
            M::Leave(leave) => {
                let reason = leave.reason();
                return Some(Exit::ServerLeave(reason, leave.message));
            }
            M::Error(e) => self.emit(RoomEvent::Error(ClientError::Server {
                code: e.code(),
                message: e.message,
                request: e.request,
            })),
            M::Pong(pong) => {
                let now = now_ms();
                if pong.timestamp > 0 && now >= pong.timestamp {
                    lock(&self.shared).rtt =
                        Some(Duration::from_millis((now - pong.timestamp) as u64));
                }
            }
            M::StreamState(update) => {
                let state = lock(&self.shared).subscriber.on_stream_state(&update);
                self.emit(RoomEvent::StreamStateChanged {
                    track_sid: update.track_sid,
                    state,
                });
            }
            M::SubscribedLayers(update) => self.on_subscribed_layers(update),
            M::ConnectionQuality(update) => {
                lock(&self.shared).connection_quality = Some(update);
                self.emit(RoomEvent::ConnectionQuality(update));
            }
            other => {
                let resend = match &other {
                    M::Subscription(m) => lock(&self.shared).subscriber.on_subscription(
                        &m.track_sid,
                        m.state() == subscription_update::State::Subscribed,
                    ),
                    _ => None,
                };
                self.handle_room_update(other);
                if let Some(settings) = resend
                    && let Err(e) = self
                        .send(signal_request::Message::TrackSettings(settings))
                        .await
                {
                    tracing::debug!(error = %e, "track settings not sent");
                }
            }
        }
        None
    }

    /// Dynacast: the server says which layers of one of our tracks some subscriber needs.
    fn on_subscribed_layers(&mut self, update: SubscribedLayersUpdate) {
        let cid = lock(&self.shared)
            .state
            .local
            .tracks
            .iter()
            .find(|t| t.sid == update.track_sid)
            .map(|t| t.cid.clone());
        let Some(track) = cid.and_then(|cid| self.local_tracks.get(&cid)) else {
            tracing::debug!(sid = %update.track_sid, "layer update for a track we do not publish");
            return;
        };
        track.set_wanted(&update.layers);
        self.emit(RoomEvent::SubscribedLayersChanged {
            track_sid: update.track_sid,
            layers: update.layers,
        });
    }

    /// Participant/track/subscription pushes: update the snapshot, resolve publications,
    /// drop remote tracks that went away, and emit events.
    fn handle_room_update(&mut self, message: signal_response::Message) {
        use signal_response::Message as M;
        let mut gone: Vec<(String, String)> = vec![];
        let events = {
            let mut snap = lock(&self.shared);
            // Tracks that go away with this message: forget what we asked for them.
            let ended: Vec<String> = match &message {
                M::TrackUnpublished(m) => vec![m.track_sid.clone()],
                M::ParticipantLeft(m) => snap
                    .state
                    .participants
                    .get(&m.participant_sid)
                    .map(|p| p.tracks.iter().map(|t| t.sid.clone()).collect())
                    .unwrap_or_default(),
                _ => vec![],
            };
            for sid in &ended {
                snap.subscriber.forget(sid);
            }
            let events = snap.state.apply(&message);
            match &message {
                M::TrackPublished(m) if m.participant_sid == snap.state.local.sid => {
                    if let Some(track) = &m.track
                        && let Some(waiter) = self.pending_publications.remove(&track.cid)
                    {
                        let _ = waiter.send(track.clone());
                    }
                }
                M::TrackUnpublished(m) if snap.remote_tracks.remove(&m.track_sid).is_some() => {
                    gone.push((m.participant_sid.clone(), m.track_sid.clone()));
                }
                M::ParticipantLeft(m) => {
                    snap.remote_tracks.retain(|sid, t| {
                        let keep = t.participant_sid != m.participant_sid;
                        if !keep {
                            gone.push((m.participant_sid.clone(), sid.clone()));
                        }
                        keep
                    });
                }
                M::Subscription(m)
                    if m.state() != subscription_update::State::Subscribed
                        && snap.remote_tracks.remove(&m.track_sid).is_some() =>
                {
                    gone.push((m.participant_sid.clone(), m.track_sid.clone()));
                }
                _ => {}
            }
            events
        };
        for event in events {
            self.emit(event);
        }
        for (participant_sid, track_sid) in gone {
            self.emit(RoomEvent::TrackUnsubscribed {
                participant_sid,
                track_sid,
            });
        }
    }

    async fn handle_pc_event(&mut self, event: PcEvent) {
        match event {
            PcEvent::State(state) => {
                let state = ConnectionState::from(state);
                lock(&self.shared).connection = Some(state);
                self.emit(RoomEvent::ConnectionStateChanged(state));
            }
            PcEvent::Track(track) => {
                // msid = "<publisher sid> <track sid>"
                let participant_sid = track.stream_id().await;
                let sid = track.track_id().await;
                let Some(kind) = TrackKind::from_rtc(track.kind().await) else {
                    tracing::warn!(%sid, "remote track of unknown kind ignored");
                    return;
                };
                let (remote, info) = {
                    let mut snap = lock(&self.shared);
                    let remote = RemoteTrack {
                        sid: sid.clone(),
                        participant_sid: participant_sid.clone(),
                        kind,
                        track,
                        repair: Arc::new(RtxRepair::new()),
                        sender_report: Default::default(),
                        stream_state: snap.subscriber.watch_stream_state(&sid),
                        commands: self.handle_commands.clone(),
                    };
                    snap.remote_tracks.insert(sid.clone(), remote.clone());
                    (remote, snap.state.track(&sid).map(|(_, info)| info))
                };
                let info = info.unwrap_or_else(|| TrackInfo {
                    sid: sid.clone(),
                    kind: kind.to_proto() as i32,
                    ..Default::default()
                });
                self.emit(RoomEvent::TrackSubscribed {
                    participant_sid,
                    track: info,
                    remote,
                });
            }
        }
    }
}
