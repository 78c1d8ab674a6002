//! A stand-in server for the SDK's media tests: a scripted signaling endpoint in front of a
//! plain webrtc-rs peer. It answers offers, confirms the first published track as `TR_v`, hands
//! every remote track to the test, and sends whatever the test pushes to the client.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCSessionDescription,
};

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

struct Handler {
    gathering: watch::Sender<RTCIceGatheringState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

impl PeerConnectionEventHandler for Handler {
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

    fn on_track<'life0, 'async_trait>(
        &'life0 self,
        track: Arc<dyn TrackRemote>,
    ) -> BoxFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let _ = self.tracks.send(track);
        })
    }
}

pub struct StandIn {
    /// The URL to connect the SDK to.
    pub url: String,
    pub pc: Arc<dyn PeerConnection>,
    /// Remote tracks as the peer opens them.
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    /// Signaling messages (protobuf JSON) to push to the client.
    pub push: mpsc::UnboundedSender<Value>,
    /// The client's `addTrack` requests.
    pub add_tracks: mpsc::UnboundedReceiver<Value>,
    task: JoinHandle<()>,
}

impl StandIn {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (gathering_tx, gathering_rx) = watch::channel(RTCIceGatheringState::New);
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().unwrap();
        let registry = register_default_interceptors(Registry::new(), &mut media_engine).unwrap();
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_media_engine(media_engine)
                .with_interceptor_registry(registry)
                .with_handler(Arc::new(Handler {
                    gathering: gathering_tx,
                    tracks: tracks_tx,
                }))
                .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
                .build()
                .await
                .unwrap(),
        );
        let (push, push_rx) = mpsc::unbounded_channel();
        let (add_tx, add_tracks) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(listener, pc.clone(), gathering_rx, push_rx, add_tx));
        Self {
            url: format!("http://{addr}"),
            pc,
            tracks,
            push,
            add_tracks,
            task,
        }
    }

    /// The next remote track the peer opens (10 s at most).
    pub async fn next_track(&mut self) -> Arc<dyn TrackRemote> {
        tokio::time::timeout(Duration::from_secs(10), self.tracks.recv())
            .await
            .expect("a remote track within 10 s")
            .expect("peer open")
    }

    /// Waits for the signaling session to end (the client left) and closes the peer.
    pub async fn finish(self) {
        self.task.await.unwrap();
        self.pc.close().await.unwrap();
    }
}

async fn serve(
    listener: TcpListener,
    pc: Arc<dyn PeerConnection>,
    gathering: watch::Receiver<RTCIceGatheringState>,
    mut push: mpsc::UnboundedReceiver<Value>,
    add_tracks: mpsc::UnboundedSender<Value>,
) {
    let (socket, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
    let join = r#"{"join":{"room":{"sid":"RM_1","name":"r"},
        "participant":{"sid":"PA_me","identity":"me"}}}"#;
    ws.send(Message::Text(join.into())).await.unwrap();
    let mut cid = None;
    let mut announced = false;
    loop {
        let msg = tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(msg)) => msg,
                _ => break,
            },
            Some(value) = push.recv() => {
                ws.send(Message::Text(value.to_string().into())).await.unwrap();
                continue;
            }
        };
        let Message::Text(text) = msg else { continue };
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        if let Some(add) = value.get("addTrack") {
            cid = add["cid"].as_str().map(str::to_owned);
            let _ = add_tracks.send(add.clone());
        } else if let Some(offer) = value.get("offer") {
            let sdp = offer["sdp"].as_str().unwrap().to_owned();
            let answer = answer(&pc, sdp, gathering.clone()).await;
            let answer = serde_json::json!({
                "answer": {"type": "answer", "sdp": answer, "id": offer["id"]}
            });
            ws.send(Message::Text(answer.to_string().into()))
                .await
                .unwrap();
            if let (Some(cid), false) = (&cid, announced) {
                let published = serde_json::json!({"trackPublished": {
                    "participantSid": "PA_me",
                    "track": {"sid": "TR_v", "cid": cid, "kind": "VIDEO",
                              "mimeType": "video/VP8"}}});
                ws.send(Message::Text(published.to_string().into()))
                    .await
                    .unwrap();
                announced = true;
            }
        } else if value.get("leave").is_some() {
            break;
        }
    }
}

async fn answer(
    pc: &Arc<dyn PeerConnection>,
    offer: String,
    mut gathering: watch::Receiver<RTCIceGatheringState>,
) -> String {
    pc.set_remote_description(RTCSessionDescription::offer(offer).unwrap())
        .await
        .unwrap();
    let answer = pc.create_answer(None).await.unwrap();
    pc.set_local_description(answer).await.unwrap();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        gathering.wait_for(|s| *s == RTCIceGatheringState::Complete),
    )
    .await;
    pc.local_description().await.unwrap().sdp
}
