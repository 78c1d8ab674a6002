//! Publishing against a stand-in server that is itself a webrtc-rs peer: negotiation,
//! media reaching the other side, and a PLI coming back as a keyframe request.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prism_client::synthetic::{Vp8Config, Vp8Source, parse_vp8};
use prism_client::{Codec, ConnectOptions, KeyframeRequest, Room, TrackOptions};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

#[tokio::test]
async fn publish_reaches_peer_and_pli_comes_back() {
    let mut stand_in = common::StandIn::start().await;
    let (room, _events) = Room::connect(&stand_in.url, "tok", ConnectOptions::default())
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

    // The peer counts what arrives and asks for keyframes every 200 ms.
    let track = stand_in.next_track().await;
    let packets = Arc::new(AtomicU64::new(0));
    let intact = Arc::new(AtomicU64::new(0));
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
    let (counted, intact_counted) = (packets.clone(), intact.clone());
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(p) = event {
                counted.fetch_add(1, Ordering::Relaxed);
                if parse_vp8(&p.payload).is_some_and(|s| s.intact) {
                    intact_counted.fetch_add(1, Ordering::Relaxed);
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
    stand_in.finish().await;
}
