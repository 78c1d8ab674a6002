//! Publishing against a stand-in server that is itself a webrtc-rs peer: negotiation,
//! media reaching the other side, and a PLI coming back as a keyframe request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prism_client::synthetic::{Vp8Config, Vp8Source, parse_vp8};
use prism_client::{Codec, ConnectOptions, KeyframeRequest, Room, TrackOptions};
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCSessionDescription,
};

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

struct ServerHandler {
    gathering: watch::Sender<RTCIceGatheringState>,
    packets: Arc<AtomicU64>,
    intact: Arc<AtomicU64>,
}

impl PeerConnectionEventHandler for ServerHandler {
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
        let packets = self.packets.clone();
        let intact = self.intact.clone();
        Box::pin(async move {
            let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
            let pli_track = track.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let pli = PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc: ssrc,
                    };
                    if pli_track.write_rtcp(vec![Box::new(pli)]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(p) = event {
                        packets.fetch_add(1, Ordering::Relaxed);
                        if parse_vp8(&p.payload).is_some_and(|s| s.intact) {
                            intact.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        })
    }
}

#[tokio::test]
async fn publish_reaches_peer_and_pli_comes_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let packets = Arc::new(AtomicU64::new(0));
    let intact = Arc::new(AtomicU64::new(0));
    let (gathering_tx, gathering_rx) = watch::channel(RTCIceGatheringState::New);

    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media_engine).unwrap();
    let server_pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(ServerHandler {
                gathering: gathering_tx,
                packets: packets.clone(),
                intact: intact.clone(),
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .unwrap(),
    );

    let pc = server_pc.clone();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        let join = r#"{"join":{"room":{"sid":"RM_1","name":"r"},
            "participant":{"sid":"PA_me","identity":"me"}}}"#;
        ws.send(Message::Text(join.into())).await.unwrap();
        let mut cid = None;
        let mut announced = false;
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if let Some(add) = value.get("addTrack") {
                cid = add["cid"].as_str().map(str::to_owned);
            } else if let Some(offer) = value.get("offer") {
                let sdp = offer["sdp"].as_str().unwrap().to_owned();
                pc.set_remote_description(RTCSessionDescription::offer(sdp).unwrap())
                    .await
                    .unwrap();
                let answer = pc.create_answer(None).await.unwrap();
                pc.set_local_description(answer).await.unwrap();
                let mut g = gathering_rx.clone();
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    g.wait_for(|s| *s == RTCIceGatheringState::Complete),
                )
                .await;
                let sdp = pc.local_description().await.unwrap().sdp;
                let answer = serde_json::json!({
                    "answer": {"type": "answer", "sdp": sdp, "id": offer["id"]}
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
    });

    let (room, _events) =
        Room::connect(&format!("http://{addr}"), "tok", ConnectOptions::default())
            .await
            .unwrap();
    let video = room
        .publish_track(TrackOptions::video("cam", Codec::Vp8, 320, 240))
        .await
        .unwrap();
    assert_eq!(video.sid(), "TR_v");
    let mut requests = video.keyframe_requests();
    let writer = tokio::spawn({
        let video = video.clone();
        async move {
            let mut source = Vp8Source::new(Vp8Config {
                bitrate_bps: 200_000,
                ..Default::default()
            });
            let mut tick = tokio::time::interval(source.frame_interval());
            loop {
                tick.tick().await;
                for p in source.next_frame() {
                    if video.write_rtp(&p).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let request = tokio::time::timeout(Duration::from_secs(15), requests.recv())
        .await
        .expect("a keyframe request within 15 s")
        .expect("request stream open");
    assert!(matches!(request, KeyframeRequest::Pli { media_ssrc } if media_ssrc == video.ssrc()));
    assert!(
        packets.load(Ordering::Relaxed) > 0,
        "media reached the peer"
    );
    assert_eq!(
        packets.load(Ordering::Relaxed),
        intact.load(Ordering::Relaxed),
        "payloads arrive intact"
    );

    room.leave().await.unwrap();
    writer.await.unwrap();
    server.await.unwrap();
    server_pc.close().await.unwrap();
}
