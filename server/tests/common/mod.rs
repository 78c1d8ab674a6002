//! Shared by the integration tests: a server on loopback with ephemeral ports, tokens, and a
//! raw signaling client for tests that speak the protocol by hand.
#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prism_proto::signal::{SignalRequest, SignalResponse, signal_response::Message as Resp};
use prism_server::Server;
use prism_server::auth::{AccessToken, Grants};
use prism_server::config::{Config, DEV_API_KEY, DEV_API_SECRET};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub fn test_config() -> Config {
    let mut config = Config {
        port: 0,
        ..Config::default()
    };
    config.rtc.udp_port = 0;
    config.rtc.workers = 2;
    config.room.empty_timeout_secs = 0;
    config
}

pub async fn start() -> Server {
    start_with(test_config()).await
}

pub async fn start_with(config: Config) -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PRISM_TEST_LOG")
                // webrtc-rs warns per packet in normal races (media before DTLS completes)
                .unwrap_or_else(|_| {
                    "warn,rtc=error,rtc_dtls=error,rtc_ice=error,webrtc=error".into()
                }),
        )
        .with_test_writer()
        .try_init();
    Server::start(config).await.expect("server starts")
}

pub fn token(room: &str, identity: &str) -> String {
    token_with(room, identity, Grants::default(), Duration::from_secs(600))
}

pub fn token_with(room: &str, identity: &str, grants: Grants, ttl: Duration) -> String {
    AccessToken::new(DEV_API_KEY, DEV_API_SECRET)
        .identity(identity)
        .room(room)
        .grants(grants)
        .ttl(ttl)
        .to_jwt()
        .expect("token")
}

pub fn http_url(server: &Server) -> String {
    format!("http://{}", server.http_addr())
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A signaling connection spoken by hand (no peer connection).
pub struct RawClient {
    pub ws: Ws,
}

impl RawClient {
    pub async fn connect(
        server: &Server,
        token: &str,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://{}/rtc?access_token={token}", server.http_addr());
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { ws })
    }

    pub async fn send(&mut self, request: &SignalRequest) {
        self.send_text(&prism_proto::to_json(request)).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next signaling message, skipping WebSocket control frames.
    pub async fn recv(&mut self) -> Option<SignalResponse> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a message within 10 s")?;
            match frame.ok()? {
                Message::Text(t) => return Some(prism_proto::from_json(&t).expect("valid JSON")),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Waits for a message matching `pick`, skipping others.
    pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(Resp) -> Option<T>) -> T {
        loop {
            let message = self
                .recv()
                .await
                .expect("connection open")
                .message
                .expect("message set");
            if let Some(t) = pick(message) {
                return t;
            }
        }
    }
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The control-plane client of `server`, with the dev key.
pub async fn control(server: &Server) -> prism_client::control::ControlClient {
    prism_client::control::ControlClient::connect(&http_url(server), DEV_API_KEY, DEV_API_SECRET)
        .await
        .expect("control plane connects")
}

/// An SDK participant of `room`.
pub async fn join(
    server: &Server,
    room: &str,
    identity: &str,
) -> (prism_client::Room, prism_client::RoomEvents) {
    join_with(server, room, identity, Grants::default(), true).await
}

pub async fn join_with(
    server: &Server,
    room: &str,
    identity: &str,
    grants: Grants,
    auto_subscribe: bool,
) -> (prism_client::Room, prism_client::RoomEvents) {
    prism_client::Room::connect(
        &http_url(server),
        &token_with(room, identity, grants, Duration::from_secs(600)),
        prism_client::ConnectOptions {
            auto_subscribe,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{identity} joins {room}: {e}"))
}

/// Waits (10 s at most) for the event `pick` accepts, skipping others.
pub async fn wait_event<T>(
    events: &mut prism_client::RoomEvents,
    what: &str,
    mut pick: impl FnMut(prism_client::RoomEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.recv().await {
            if let Some(t) = pick(event) {
                return Some(t);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(t)) => t,
        Ok(None) => panic!("events ended while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A two-person call kept alive as long as this value: `publisher` sends synthetic VP8,
/// `subscriber` reads everything it receives (so its engine's queues never back up).
#[allow(dead_code)] // fields are held, not read
pub struct VideoCall {
    pub publisher: prism_client::Room,
    pub subscriber: prism_client::Room,
    publisher_events: prism_client::RoomEvents,
    media: tokio::task::JoinHandle<()>,
}

/// Starts a [`VideoCall`] in `room` between `publisher` and `subscriber` (identities).
#[allow(dead_code)] // not every test binary uses it
pub async fn video_call(
    server: &Server,
    room: &str,
    publisher: &str,
    subscriber: &str,
) -> VideoCall {
    use prism_client::{Codec, RoomEvent, TrackOptions};
    let (publisher, publisher_events) = join(server, room, publisher).await;
    let (subscriber, mut events) = join(server, room, subscriber).await;
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let RoomEvent::TrackSubscribed { remote, .. } = event {
                tokio::spawn(async move { while remote.read_rtp().await.is_ok() {} });
            }
        }
    });
    let video = publisher
        .publish_track(TrackOptions::video("camera", Codec::Vp8, 640, 360))
        .await
        .expect("publish");
    let media = send_vp8(video);
    VideoCall {
        publisher,
        subscriber,
        publisher_events,
        media,
    }
}

/// Publishes synthetic VP8 on `track` until it fails, answering keyframe requests.
pub fn send_vp8(track: prism_client::LocalTrack) -> tokio::task::JoinHandle<()> {
    use prism_client::synthetic::{Vp8Config, Vp8Source};
    tokio::spawn(async move {
        let mut source = Vp8Source::new(Vp8Config::default());
        let mut keyframes = track.keyframe_requests();
        let mut tick = tokio::time::interval(source.frame_interval());
        loop {
            tick.tick().await;
            if keyframes.try_recv().is_some() {
                source.request_keyframe();
            }
            for packet in source.next_frame() {
                if track.write_rtp(&packet).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// Tests that run many real peers load both cores of a CI machine; those in one test binary
/// take this in turn so each measures media delivery rather than the scheduler.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A real client offer (a data channel, as every Prism client sends first), from the sans-I/O
/// engine, for tests that speak signaling by hand.
pub fn client_offer() -> String {
    let now = std::time::Instant::now();
    let mut pc = rtc::peer_connection::RTCPeerConnectionBuilder::new()
        .build(now)
        .expect("pc");
    pc.create_data_channel("_reliable", None)
        .expect("data channel");
    let offer = pc.create_offer(None).expect("offer");
    pc.set_local_description(now, offer.clone()).expect("local");
    offer.sdp
}

/// Asserts that within `timeout` the server holds no room, participant or worker state and
/// the runtime is back to at most `tasks_before` tasks (`context` names the run on failure).
pub async fn assert_nothing_left_behind(
    server: &Server,
    timeout: Duration,
    tasks_before: usize,
    context: &str,
) {
    let clean = eventually(timeout, || async {
        let snapshots = server.worker_snapshots().await;
        server.rooms().room_count() == 0
            && server.rooms().participant_count() == 0
            && snapshots
                .iter()
                .all(|s| *s == prism_server::transport::WorkerSnapshot::default())
    })
    .await;
    assert!(
        clean,
        "left behind {context}: {} rooms, {} participants, workers {:?}",
        server.rooms().room_count(),
        server.rooms().participant_count(),
        server.worker_snapshots().await
    );
    let metrics = tokio::runtime::Handle::current().metrics();
    let settled = eventually(timeout, || async {
        metrics.num_alive_tasks() <= tasks_before
    })
    .await;
    assert!(
        settled,
        "tasks: {tasks_before} before, {} after",
        metrics.num_alive_tasks()
    );
}
