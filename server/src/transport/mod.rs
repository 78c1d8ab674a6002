//! UDP sockets and the peer connections that live on them. One worker thread per core owns one
//! socket (its own port) and every connection placed on it; the rest of the server talks to a
//! worker through [`WorkerHandle`] (commands in) and per-connection [`ConnEvent`]s (events out).

mod connection;
mod data;
mod dtls_replay;
mod interceptors;
pub mod peer;
mod sdp_fixes;
#[doc(hidden)]
pub mod sim;
pub mod stun;
pub mod udp;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::media::layers::LayerRequest;
use crate::media::receiver::DeclaredLayer;
pub use worker::snapshot::{ConnDetail, DownTrackDetail, LayerDetail, PublishedDetail};
pub use worker::{WorkerSnapshot, WorkerStats};

/// A peer connection, unique in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    #[error("no such connection")]
    UnknownConnection,
    #[error("the media worker is gone")]
    WorkerGone,
    #[error("the media worker is overloaded, try again")]
    Overloaded,
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("answer {got} does not match the outstanding offer ({expected:?})")]
    UnexpectedAnswer { got: u32, expected: Option<u32> },
    #[error("cannot create the peer connection: {0}")]
    Engine(String),
}

/// Connection state as the room layer needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

/// What a worker tells the owner of a connection (its signaling session).
#[derive(Debug)]
pub enum ConnEvent {
    /// A server-initiated offer to send to the client.
    Offer {
        sdp: String,
        id: u32,
    },
    /// A published track (or another simulcast layer of it) started arriving.
    TrackOpened {
        track_id: String,
        kind: MediaKind,
        mime_type: String,
        ssrc: u32,
        rid: Option<String>,
        first_layer: bool,
    },
    StateChanged(PeerState),
    /// The subscriber's answer covering this track was applied; media flows.
    Subscribed {
        track_sid: String,
    },
    SubscriptionFailed {
        track_sid: String,
        reason: String,
    },
    /// The track went away on the server (its publisher left or unpublished).
    Unsubscribed {
        track_sid: String,
    },
    /// A message arrived on one of the client's data channels (see `transport::data`).
    Data {
        reliable: bool,
        payload: bytes::Bytes,
    },
    /// A published audio track's speaking state (see `media::audio_level`): when speaking
    /// starts or stops, and each detection window while it goes on.
    SpeakerLevel {
        track_id: String,
        level: f32,
        active: bool,
    },
    /// To a subscriber: what it now receives of a video track (the layer switched, or the
    /// track paused or resumed).
    StreamState {
        track_sid: String,
        paused: bool,
        /// The layer forwarded: its RID ("" without simulcast), rank among `layers` (0 =
        /// lowest) and declared size.
        rid: String,
        rank: usize,
        layers: usize,
        width: u32,
        height: u32,
        /// Why paused (`StreamStateUpdate.Reason` in signal.proto).
        reason: crate::media::down_track::PauseReason,
    },
    /// To a subscriber, every few seconds: how its downlink carries what it subscribed to.
    ConnectionQuality(crate::bwe::quality::QualityReport),
    /// To a publisher (dynacast): which layers of its track some subscriber needs.
    SubscribedLayers {
        track_id: String,
        layers: Vec<(String, bool)>,
    },
}

/// Asks a worker to do something with its connections.
#[derive(Debug)]
pub(crate) enum WorkerCommand {
    Open {
        conn: ConnId,
        events: mpsc::Sender<ConnEvent>,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    Offer {
        conn: ConnId,
        sdp: String,
        reply: oneshot::Sender<Result<Option<String>, TransportError>>,
    },
    Answer {
        conn: ConnId,
        sdp: String,
        id: u32,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    /// The one offer of a viewer that cannot renegotiate (see `WorkerHandle::viewer_offer`).
    ViewerOffer {
        conn: ConnId,
        sdp: String,
        reply: oneshot::Sender<Result<String, TransportError>>,
    },
    Candidate {
        conn: ConnId,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    },
    Subscribe(SubscribeSpec),
    Unsubscribe {
        subscriber: ConnId,
        track_sid: String,
    },
    /// A subscriber's layer request for one of its subscribed tracks.
    LayerRequest {
        subscriber: ConnId,
        track_sid: String,
        request: LayerRequest,
        /// Shown large by the subscriber: allocated before its other tracks.
        pinned: bool,
    },
    Unpublish {
        publisher: ConnId,
        track_id: String,
    },
    Close {
        conn: ConnId,
    },
    /// Writes one message to these connections' reliable or lossy data channel.
    SendData {
        conns: Vec<ConnId>,
        reliable: bool,
        payload: bytes::Bytes,
    },
    Snapshot {
        reply: oneshot::Sender<WorkerSnapshot>,
    },
    /// Every connection's media, for the dashboard.
    Details {
        reply: oneshot::Sender<Vec<ConnDetail>>,
    },
}

/// Forward a publisher's track to a subscriber.
#[derive(Debug, Clone)]
pub struct SubscribeSpec {
    pub subscriber: ConnId,
    pub publisher: ConnId,
    /// The publisher's id for the track.
    pub track_id: String,
    pub track_sid: String,
    pub publisher_sid: String,
    /// The simulcast layers the publisher declared (empty when it declared none).
    pub layers: Vec<DeclaredLayer>,
    /// A screen share: allocated before cameras, like a pinned track.
    pub screen_share: bool,
}

/// The way into one worker. Cheap to clone.
#[derive(Clone)]
pub struct WorkerHandle {
    pub index: usize,
    /// The address the worker's socket is bound to.
    pub bound: SocketAddr,
    tx: mpsc::Sender<WorkerCommand>,
    pub stats: Arc<WorkerStats>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("index", &self.index)
            .field("bound", &self.bound)
            .finish()
    }
}

impl WorkerHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> WorkerCommand,
    ) -> Result<T, TransportError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| TransportError::WorkerGone)?;
        rx.await.map_err(|_| TransportError::WorkerGone)
    }

    fn post(&self, command: WorkerCommand) -> Result<(), TransportError> {
        self.tx.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TransportError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => TransportError::WorkerGone,
        })
    }

    /// Creates the server side of a connection; `events` receives what happens to it.
    pub async fn open(
        &self,
        conn: ConnId,
        events: mpsc::Sender<ConnEvent>,
    ) -> Result<(), TransportError> {
        self.call(|reply| WorkerCommand::Open {
            conn,
            events,
            reply,
        })
        .await?
    }

    /// Applies the client's offer and returns the answer, or None when the offer was ignored
    /// because a server offer is outstanding (glare: the client rolls back and answers ours).
    pub async fn offer(&self, conn: ConnId, sdp: String) -> Result<Option<String>, TransportError> {
        self.call(|reply| WorkerCommand::Offer { conn, sdp, reply })
            .await?
    }

    /// Answers the only offer of a viewer that can never renegotiate (WHEP): the answer gives
    /// each audio/video section the viewer offered to receive a fixed sender, and the
    /// viewer's subscriptions take turns on those senders (one track per sender at a time,
    /// the others waiting for it to free up) instead of adding senders.
    pub async fn viewer_offer(&self, conn: ConnId, sdp: String) -> Result<String, TransportError> {
        self.call(|reply| WorkerCommand::ViewerOffer { conn, sdp, reply })
            .await?
    }

    pub async fn answer(&self, conn: ConnId, sdp: String, id: u32) -> Result<(), TransportError> {
        self.call(|reply| WorkerCommand::Answer {
            conn,
            sdp,
            id,
            reply,
        })
        .await?
    }

    pub fn candidate(
        &self,
        conn: ConnId,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    ) -> Result<(), TransportError> {
        self.post(WorkerCommand::Candidate {
            conn,
            candidate,
            sdp_mid,
            sdp_mline_index,
        })
    }

    pub fn subscribe(&self, spec: SubscribeSpec) -> Result<(), TransportError> {
        self.post(WorkerCommand::Subscribe(spec))
    }

    pub fn unsubscribe(&self, subscriber: ConnId, track_sid: String) -> Result<(), TransportError> {
        self.post(WorkerCommand::Unsubscribe {
            subscriber,
            track_sid,
        })
    }

    pub fn request_layer(
        &self,
        subscriber: ConnId,
        track_sid: String,
        request: LayerRequest,
        pinned: bool,
    ) -> Result<(), TransportError> {
        self.post(WorkerCommand::LayerRequest {
            subscriber,
            track_sid,
            request,
            pinned,
        })
    }

    pub fn unpublish(&self, publisher: ConnId, track_id: String) -> Result<(), TransportError> {
        self.post(WorkerCommand::Unpublish {
            publisher,
            track_id,
        })
    }

    /// Sends `payload` on each connection's reliable (else lossy) data channel.
    pub fn send_data(
        &self,
        conns: Vec<ConnId>,
        reliable: bool,
        payload: bytes::Bytes,
    ) -> Result<(), TransportError> {
        self.post(WorkerCommand::SendData {
            conns,
            reliable,
            payload,
        })
    }

    /// Closes a connection and everything that forwards from or to it. Never lost: when the
    /// queue is full it is delivered from a task.
    pub fn close(&self, conn: ConnId) {
        if let Err(mpsc::error::TrySendError::Full(cmd)) =
            self.tx.try_send(WorkerCommand::Close { conn })
        {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(cmd).await;
            });
        }
    }

    pub async fn snapshot(&self) -> Result<WorkerSnapshot, TransportError> {
        self.call(|reply| WorkerCommand::Snapshot { reply }).await
    }

    /// Every connection's published layers and down tracks (the dashboard's data).
    pub async fn details(&self) -> Result<Vec<ConnDetail>, TransportError> {
        self.call(|reply| WorkerCommand::Details { reply }).await
    }

    /// Commands waiting in the worker's queue.
    pub fn queued_commands(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// All workers of the process.
pub struct Transport {
    workers: Vec<WorkerHandle>,
    next: AtomicUsize,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Transport {
    /// Binds one socket per worker (ports `udp_port`, `udp_port + 1`, ...) and starts the threads.
    pub fn start(config: &Config) -> Result<Self, TransportError> {
        let advertised_ips = config.advertised_ips();
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for index in 0..config.worker_count() {
            let port = match config.rtc.udp_port {
                0 => 0,
                base => base + index as u16,
            };
            let bind = SocketAddr::new(config.bind, port);
            let settings = peer::PeerSettings {
                // Ports are filled in once the socket is bound.
                advertised: advertised_ips
                    .iter()
                    .map(|ip: &IpAddr| SocketAddr::new(*ip, port))
                    .collect(),
                ice_disconnected_timeout: Duration::from_millis(
                    config.rtc.ice_disconnected_timeout_ms,
                ),
                ice_failed_timeout: Duration::from_millis(config.rtc.ice_failed_timeout_ms),
                bwe: config.bwe.clone(),
            };
            let (handle, thread) = worker::spawn(
                index,
                bind,
                settings,
                config.rtc.socket_recv_buffer,
                config.rtc.socket_send_buffer,
                worker::MediaPolicy {
                    keyframe_interval: Duration::from_millis(
                        config.room.keyframe_request_interval_ms,
                    ),
                    dynacast: config.room.dynacast,
                },
            )?;
            workers.push(handle);
            threads.push(thread);
        }
        Ok(Self {
            workers,
            next: AtomicUsize::new(0),
            threads: std::sync::Mutex::new(threads),
        })
    }

    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    /// The worker for a new room: the one with the fewest connections (ties round-robin).
    pub fn pick(&self) -> WorkerHandle {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.workers.len();
        (0..n)
            .map(|i| &self.workers[(start + i) % n])
            .min_by_key(|w| w.stats.connections.load(Ordering::Relaxed))
            .expect("at least one worker")
            .clone()
    }

    /// Stops every worker and waits for its thread.
    pub fn shutdown(&self) {
        for w in &self.workers {
            w.stats.stop.store(true, Ordering::Relaxed);
            let _ = w.tx.try_send(WorkerCommand::Snapshot {
                reply: oneshot::channel().0,
            });
        }
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for t in threads {
            let _ = t.join();
        }
    }
}
