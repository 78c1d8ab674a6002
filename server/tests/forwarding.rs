//! End to end over loopback with real WebRTC peers (the Rust SDK): one publisher of synthetic
//! Opus + VP8 and several subscribers. Every subscriber gets the packets (>= 99%) with the
//! publisher's exact payload bytes and sequence numbers that advance exactly as the
//! publisher's did; a late subscriber starts on a keyframe (asked of the publisher); unpublish
//! and leave reach everyone.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use prism_client::synthetic::{
    OpusConfig, OpusSource, Vp8Config, Vp8Source, parse_payload, parse_vp8_descriptor,
};
use prism_client::{Codec, ConnectOptions, LocalTrack, Room, RoomEvent, TrackOptions};
use tokio::sync::watch;

const ROOM: &str = "forwarding";

/// What the publisher sent: (mime, counter) → payload.
type Sent = Arc<Mutex<HashMap<(String, u64), Bytes>>>;

#[derive(Debug, Clone)]
struct Received {
    seq: u16,
    counter: u64,
    payload: Bytes,
    at: Instant,
}

/// Everything one subscriber saw.
#[derive(Default)]
struct Subscriber {
    /// track sid → (mime, packets in arrival order)
    tracks: HashMap<String, (String, Vec<Received>)>,
    unpublished: Vec<String>,
    left: Vec<String>,
}

type Log = Arc<Mutex<Subscriber>>;

async fn subscriber(server: &prism_server::Server, identity: &str) -> (Room, Log) {
    let (room, mut events) = Room::connect(
        &http_url(server),
        &token(ROOM, identity),
        ConnectOptions::default(),
    )
    .await
    .expect("subscriber connects");
    let log: Log = Arc::default();
    let events_log = log.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                RoomEvent::TrackSubscribed { track, remote, .. } => {
                    let log = events_log.clone();
                    let mime = track.mime_type.clone();
                    log.lock()
                        .unwrap()
                        .tracks
                        .insert(remote.sid().to_owned(), (mime.clone(), Vec::new()));
                    tokio::spawn(async move {
                        while let Ok(packet) = remote.read_rtp().await {
                            let Some(stamp) = parse_payload(&mime, &packet.payload) else {
                                continue;
                            };
                            let mut log = log.lock().unwrap();
                            if let Some((_, packets)) = log.tracks.get_mut(remote.sid()) {
                                packets.push(Received {
                                    seq: packet.header.sequence_number,
                                    counter: stamp.counter,
                                    payload: packet.payload.clone(),
                                    at: Instant::now(),
                                });
                            }
                        }
                    });
                }
                RoomEvent::TrackUnpublished { track_sid, .. } => {
                    events_log.lock().unwrap().unpublished.push(track_sid)
                }
                RoomEvent::ParticipantLeft { identity, .. } => {
                    events_log.lock().unwrap().left.push(identity)
                }
                RoomEvent::Disconnected { .. } => break,
                _ => {}
            }
        }
    });
    (room, log)
}

/// Publishes synthetic media until `stop` turns true; answers keyframe requests.
fn spawn_video(
    track: LocalTrack,
    sent: Sent,
    stop: watch::Receiver<bool>,
    requests: Arc<Mutex<u32>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut source = Vp8Source::new(Vp8Config {
            bitrate_bps: 1_000_000,
            // Long, so that any keyframe a subscriber starts on was asked for (PLI).
            keyframe_interval: Duration::from_secs(120),
            ..Vp8Config::default()
        });
        let mut keyframes = track.keyframe_requests();
        let mut tick = tokio::time::interval(source.frame_interval());
        while !*stop.borrow() {
            tick.tick().await;
            if keyframes.try_recv().is_some() {
                *requests.lock().unwrap() += 1;
                source.request_keyframe();
            }
            for packet in source.next_frame() {
                let stamp = parse_payload("video/VP8", &packet.payload).expect("stamped");
                sent.lock()
                    .unwrap()
                    .insert(("video/VP8".into(), stamp.counter), packet.payload.clone());
                let _ = track.write_rtp(&packet).await;
            }
        }
    })
}

fn spawn_audio(
    track: LocalTrack,
    sent: Sent,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut source = OpusSource::new(OpusConfig::default());
        let mut tick = tokio::time::interval(source.packet_interval());
        while !*stop.borrow() {
            tick.tick().await;
            let packet = source.next_packet();
            let stamp = parse_payload("audio/opus", &packet.payload).expect("stamped");
            sent.lock()
                .unwrap()
                .insert(("audio/opus".into(), stamp.counter), packet.payload.clone());
            let _ = track.write_rtp(&packet).await;
        }
    })
}

/// Checks one subscriber's copy of one track against what was sent.
fn check_track(
    who: &str,
    mime: &str,
    packets: &[Received],
    sent: &HashMap<(String, u64), Bytes>,
    last_sent: u64,
) {
    assert!(!packets.is_empty(), "{who} received no {mime}");
    if mime.eq_ignore_ascii_case("video/VP8") {
        let first = parse_vp8_descriptor(&packets[0].payload).expect("vp8 descriptor");
        assert!(
            first.starts_keyframe(&packets[0].payload),
            "{who}: the first video packet is a keyframe start"
        );
    }
    let mut by_counter: Vec<&Received> = packets.iter().collect();
    by_counter.sort_by_key(|p| p.counter);
    by_counter.dedup_by_key(|p| p.counter);
    let first = by_counter[0].counter;
    let expected = last_sent - first + 1;
    let ratio = by_counter.len() as f64 / expected as f64;
    assert!(
        ratio >= 0.99,
        "{who} {mime}: received {} of {expected} packets ({:.2}%)",
        by_counter.len(),
        ratio * 100.0
    );
    for p in &by_counter {
        let original = sent
            .get(&(mime.to_owned(), p.counter))
            .unwrap_or_else(|| panic!("{who}: packet {} was never sent", p.counter));
        assert_eq!(
            &p.payload, original,
            "{who} {mime}: payload {} differs",
            p.counter
        );
    }
    for pair in by_counter.windows(2) {
        let seq_step = pair[1].seq.wrapping_sub(pair[0].seq) as u64;
        let counter_step = pair[1].counter - pair[0].counter;
        assert_eq!(
            seq_step, counter_step,
            "{who} {mime}: sequence numbers jump {seq_step} where the publisher's advanced {counter_step}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_to_three_subscribers_late_joiner_unpublish_and_leave() {
    let server = start().await;
    let mut subscribers = Vec::new();
    for i in 0..3 {
        subscribers.push(subscriber(&server, &format!("sub-{i}")).await);
    }
    let (publisher, _publisher_events) = Room::connect(
        &http_url(&server),
        &token(ROOM, "publisher"),
        ConnectOptions::default(),
    )
    .await
    .expect("publisher connects");
    let video = publisher
        .publish_track(TrackOptions::video("camera", Codec::Vp8, 640, 360))
        .await
        .expect("publish video");
    let audio = publisher
        .publish_track(TrackOptions::audio("microphone"))
        .await
        .expect("publish audio");
    let video_sid = video.sid().to_owned();
    let sent: Sent = Arc::default();
    let keyframe_requests = Arc::new(Mutex::new(0u32));
    let (stop_tx, stop) = watch::channel(false);
    let video_task = spawn_video(
        video.clone(),
        sent.clone(),
        stop.clone(),
        keyframe_requests.clone(),
    );
    let audio_task = spawn_audio(audio.clone(), sent.clone(), stop.clone());

    // Everyone receives both tracks.
    let all_flowing = eventually(Duration::from_secs(15), || async {
        subscribers.iter().all(|(_, log)| {
            let log = log.lock().unwrap();
            log.tracks.len() == 2 && log.tracks.values().all(|(_, p)| p.len() > 10)
        })
    })
    .await;
    assert!(all_flowing, "all three subscribers receive audio and video");

    // A late subscriber starts on a keyframe the server asked the publisher for.
    let requests_before = *keyframe_requests.lock().unwrap();
    let joined_at = Instant::now();
    subscribers.push(subscriber(&server, "late").await);
    let late = subscribers.last().unwrap().1.clone();
    let late_video = eventually(Duration::from_secs(10), || async {
        late.lock()
            .unwrap()
            .tracks
            .values()
            .any(|(m, p)| m.eq_ignore_ascii_case("video/VP8") && !p.is_empty())
    })
    .await;
    assert!(late_video, "the late subscriber receives video");
    assert!(
        *keyframe_requests.lock().unwrap() > requests_before,
        "the late subscriber's keyframe was requested from the publisher"
    );
    let first_video_at = late
        .lock()
        .unwrap()
        .tracks
        .values()
        .find(|(m, _)| m.eq_ignore_ascii_case("video/VP8"))
        .map(|(_, p)| p[0].at)
        .unwrap();
    eprintln!(
        "late subscriber: first video {:?} after joining",
        first_video_at - joined_at
    );

    tokio::time::sleep(Duration::from_secs(2)).await; // let media run with four subscribers
    stop_tx.send(true).unwrap();
    video_task.await.unwrap();
    audio_task.await.unwrap();
    let last_sent: HashMap<String, u64> = {
        let sent = sent.lock().unwrap();
        let mut last = HashMap::new();
        for (mime, counter) in sent.keys() {
            let e = last.entry(mime.clone()).or_insert(0);
            *e = (*e).max(*counter);
        }
        last
    };
    // Wait until the last packets arrived (or give up and let the ratio check judge).
    eventually(Duration::from_secs(3), || async {
        subscribers.iter().all(|(_, log)| {
            log.lock().unwrap().tracks.values().all(|(mime, p)| {
                p.iter()
                    .any(|r| Some(&r.counter) == last_sent.get(mime.as_str()))
            })
        })
    })
    .await;

    let sent = sent.lock().unwrap().clone();
    for (i, (_, log)) in subscribers.iter().enumerate() {
        let log = log.lock().unwrap();
        assert_eq!(log.tracks.len(), 2, "subscriber {i} has both tracks");
        for (mime, packets) in log.tracks.values() {
            let mime_key = if mime.eq_ignore_ascii_case("video/VP8") {
                "video/VP8"
            } else {
                "audio/opus"
            };
            check_track(
                &format!("subscriber {i}"),
                mime_key,
                packets,
                &sent,
                last_sent[mime_key],
            );
        }
    }

    // Unpublish reaches everyone.
    video.unpublish().await.expect("unpublish");
    let unpublished = eventually(Duration::from_secs(5), || async {
        subscribers
            .iter()
            .all(|(_, log)| log.lock().unwrap().unpublished.contains(&video_sid))
    })
    .await;
    assert!(
        unpublished,
        "every subscriber is told the video was unpublished"
    );

    // Leave reaches everyone.
    publisher.leave().await.expect("leave");
    let left = eventually(Duration::from_secs(5), || async {
        subscribers
            .iter()
            .all(|(_, log)| log.lock().unwrap().left.iter().any(|i| i == "publisher"))
    })
    .await;
    assert!(left, "every subscriber is told the publisher left");
    for (room, _) in subscribers {
        room.leave().await.expect("leave");
    }
    let empty = eventually(Duration::from_secs(5), || async {
        server.rooms().room_count() == 0
    })
    .await;
    assert!(empty, "the room closes once everyone left");
    server.shutdown().await;
}
