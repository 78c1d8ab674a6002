//! Explicit subscriptions (auto-subscribe off), every video codec the server negotiates
//! (VP9, H.264, AV1 besides VP8), keyframe-gated starts per codec, mute and unsubscribe.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use prism_client::rtp;
use prism_client::{Codec, ConnectOptions, LocalTrack, Room, RoomEvent, TrackOptions};

const ROOM: &str = "codecs";

/// A minimal payload of `codec` that its keyframe detector recognises (or not), followed by an
/// 8-byte frame counter.
fn payload(codec: Codec, keyframe: bool, counter: u64) -> Bytes {
    let mut p = match (codec, keyframe) {
        // VP9 descriptor: I (15-bit picture id), B, E; P set on delta frames.
        (Codec::Vp9, true) => vec![0x8C, 0x80 | (counter >> 8) as u8 & 0x7f, counter as u8],
        (Codec::Vp9, false) => vec![0xCC, 0x80 | (counter >> 8) as u8 & 0x7f, counter as u8],
        // H.264 single NAL unit: IDR (type 5) or non-IDR slice (type 1).
        (Codec::H264, true) => vec![0x65, 0x88],
        (Codec::H264, false) => vec![0x41, 0x9a],
        // AV1 aggregation header (W=1; N=1 starts a coded video sequence) + OBU header.
        (Codec::Av1, true) => vec![0x18, 0x08],
        (Codec::Av1, false) => vec![0x10, 0x30],
        _ => unreachable!("only the codecs under test"),
    };
    p.extend_from_slice(&counter.to_be_bytes());
    p.extend(std::iter::repeat_n(0xAB, 200));
    Bytes::from(p)
}

fn counter_of(payload: &[u8]) -> u64 {
    // The counter sits right after the codec header, which is 3 bytes for VP9, 2 otherwise.
    let at = if payload[0] & 0x80 != 0 && payload.len() > 3 && payload[1] & 0x80 != 0 {
        3
    } else {
        2
    };
    u64::from_be_bytes(payload[at..at + 8].try_into().unwrap())
}

fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp9 => payload[0] & 0x40 == 0,
        Codec::H264 => payload[0] & 0x1f == 5,
        Codec::Av1 => payload[0] & 0x08 != 0,
        _ => false,
    }
}

/// Sends one single-packet frame every 20 ms, a keyframe every 50 frames and on request.
fn publish(track: LocalTrack, codec: Codec) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut requests = track.keyframe_requests();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for counter in 0u64.. {
            tick.tick().await;
            let keyframe = counter % 50 == 0 || requests.try_recv().is_some();
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: true,
                    sequence_number: counter as u16,
                    timestamp: (counter as u32).wrapping_mul(1800),
                    ..Default::default()
                },
                payload: payload(codec, keyframe, counter),
            };
            if track.write_rtp(&packet).await.is_err() {
                return;
            }
        }
    })
}

type Seen = Arc<Mutex<HashMap<String, Vec<Bytes>>>>;

#[derive(Default)]
struct Notices {
    published: HashMap<String, String>, // mime -> sid
    muted: Vec<(String, bool)>,
    unsubscribed: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_subscriptions_codecs_mute_and_unsubscribe() {
    let server = start().await;
    let (viewer, mut events) = Room::connect(
        &http_url(&server),
        &token(ROOM, "viewer"),
        ConnectOptions {
            auto_subscribe: false,
            ..ConnectOptions::default()
        },
    )
    .await
    .expect("viewer connects");
    let seen: Seen = Arc::default();
    let notices: Arc<Mutex<Notices>> = Arc::default();
    {
        let (seen, notices) = (seen.clone(), notices.clone());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    RoomEvent::TrackPublished { track, .. } => {
                        notices
                            .lock()
                            .unwrap()
                            .published
                            .insert(track.mime_type, track.sid);
                    }
                    RoomEvent::TrackSubscribed { remote, .. } => {
                        let seen = seen.clone();
                        seen.lock()
                            .unwrap()
                            .insert(remote.sid().to_owned(), Vec::new());
                        tokio::spawn(async move {
                            while let Ok(p) = remote.read_rtp().await {
                                if let Some(v) = seen.lock().unwrap().get_mut(remote.sid()) {
                                    v.push(p.payload);
                                }
                            }
                        });
                    }
                    RoomEvent::TrackMuted {
                        track_sid, muted, ..
                    } => notices.lock().unwrap().muted.push((track_sid, muted)),
                    RoomEvent::TrackUnsubscribed { track_sid, .. } => {
                        notices.lock().unwrap().unsubscribed.push(track_sid)
                    }
                    _ => {}
                }
            }
        });
    }

    // One publisher per codec: the SDK's webrtc-rs connection keeps the codec set of its first
    // negotiation, so one SDK participant publishes one video codec.
    let mut tracks = HashMap::new();
    let mut tasks = Vec::new();
    let mut publishers = Vec::new();
    for codec in [Codec::Vp9, Codec::H264, Codec::Av1] {
        let (publisher, events) = Room::connect(
            &http_url(&server),
            &token(ROOM, &format!("publisher-{codec:?}")),
            // Pure publishers: only the viewer's subscriptions exist on the server.
            ConnectOptions {
                auto_subscribe: false,
                ..ConnectOptions::default()
            },
        )
        .await
        .expect("publisher connects");
        let track = publisher
            .publish_track(TrackOptions::video(format!("{codec:?}"), codec, 640, 360))
            .await
            .unwrap_or_else(|e| panic!("publish {codec:?}: {e}"));
        tasks.push(publish(track.clone(), codec));
        tracks.insert(codec.mime_type().to_owned(), (codec, track));
        publishers.push((publisher, events));
    }
    let announced = eventually(Duration::from_secs(10), || async {
        notices.lock().unwrap().published.len() == 3
    })
    .await;
    assert!(announced, "the viewer is told about all three tracks");
    let sid_of = |mime: &str| notices.lock().unwrap().published[mime].clone();

    // Subscribing to one track brings exactly that one.
    viewer
        .subscribe(&[sid_of("video/H264")])
        .await
        .expect("subscribe");
    let flowing = |sid: String| {
        let seen = seen.clone();
        async move {
            eventually(Duration::from_secs(10), || async {
                seen.lock()
                    .unwrap()
                    .get(&sid)
                    .is_some_and(|v| v.len() >= 20)
            })
            .await
        }
    };
    assert!(
        flowing(sid_of("video/H264")).await,
        "H.264 flows once subscribed"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "with auto-subscribe off, nothing else was subscribed"
    );

    viewer
        .subscribe(&[sid_of("video/VP9"), sid_of("video/AV1")])
        .await
        .expect("subscribe the rest");
    for mime in ["video/VP9", "video/AV1"] {
        assert!(flowing(sid_of(mime)).await, "{mime} flows once subscribed");
    }

    // Each starts on a keyframe and then follows the publisher frame by frame.
    for (mime, (codec, _)) in &tracks {
        let sid = sid_of(mime);
        let payloads = seen.lock().unwrap()[&sid].clone();
        assert!(
            is_keyframe(*codec, &payloads[0]),
            "{mime} starts on a keyframe"
        );
        for pair in payloads.windows(2) {
            assert_eq!(
                counter_of(&pair[1]),
                counter_of(&pair[0]) + 1,
                "{mime}: frames arrive in order without loss"
            );
        }
    }

    // Mute is announced to the viewer.
    tracks["video/H264"].1.set_muted(true).await.expect("mute");
    let h264 = sid_of("video/H264");
    let muted = eventually(Duration::from_secs(5), || async {
        notices
            .lock()
            .unwrap()
            .muted
            .contains(&(h264.clone(), true))
    })
    .await;
    assert!(muted, "the viewer sees the mute");

    // Unsubscribing removes the down track on the server and tells the viewer.
    let vp9 = sid_of("video/VP9");
    viewer
        .unsubscribe(std::slice::from_ref(&vp9))
        .await
        .expect("unsubscribe");
    let gone = eventually(Duration::from_secs(5), || async {
        let down_tracks: usize = server
            .worker_snapshots()
            .await
            .iter()
            .map(|s| s.down_tracks)
            .sum();
        down_tracks == 2 && notices.lock().unwrap().unsubscribed.contains(&vp9)
    })
    .await;
    assert!(gone, "the VP9 down track is gone and the viewer was told");

    for t in tasks {
        t.abort();
    }
    for (publisher, _) in publishers {
        publisher.leave().await.unwrap();
    }
    viewer.leave().await.unwrap();
    server.shutdown().await;
}
