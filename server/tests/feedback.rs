//! The RTCP feedback loop over loopback with real peers: keyframe requests from many
//! subscribers reach the publisher throttled per layer.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use prism_client::synthetic::{Vp8Config, Vp8Source};
use prism_client::{Codec, ConnectOptions, RemoteTrack, Room, RoomEvent, TrackOptions};

const SUBSCRIBERS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_subscribers_asking_for_keyframes_cost_at_most_two_per_second() {
    let server = start().await;
    let url = http_url(&server);
    let (publisher, _events) =
        Room::connect(&url, &token("pli", "publisher"), ConnectOptions::default())
            .await
            .expect("publisher");
    let video = publisher
        .publish_track(TrackOptions::video("camera", Codec::Vp8, 640, 360))
        .await
        .expect("publish");
    let requests: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let media = {
        let requests = requests.clone();
        let video = video.clone();
        tokio::spawn(async move {
            let mut source = Vp8Source::new(Vp8Config {
                bitrate_bps: 300_000,
                keyframe_interval: Duration::from_secs(60),
                ..Vp8Config::default()
            });
            let mut keyframes = video.keyframe_requests();
            let mut tick = tokio::time::interval(source.frame_interval());
            loop {
                tick.tick().await;
                while keyframes.try_recv().is_some() {
                    requests.lock().unwrap().push(Instant::now());
                    source.request_keyframe();
                }
                for packet in source.next_frame() {
                    if video.write_rtp(&packet).await.is_err() {
                        return;
                    }
                }
            }
        })
    };

    // Subscribers join ten at a time; each keeps its video track.
    let tracks: Arc<Mutex<Vec<RemoteTrack>>> = Arc::default();
    let mut rooms = Vec::new();
    for batch in 0..SUBSCRIBERS / 10 {
        let mut joins = Vec::new();
        for i in 0..10 {
            let url = url.clone();
            let token = token("pli", &format!("sub-{batch}-{i}"));
            joins.push(tokio::spawn(async move {
                Room::connect(&url, &token, ConnectOptions::default()).await
            }));
        }
        for join in joins {
            let (room, mut events) = join.await.unwrap().expect("subscriber");
            let tracks = tracks.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if let RoomEvent::TrackSubscribed { remote, .. } = event {
                        tracks.lock().unwrap().push(remote.clone());
                        // Drain media so the subscriber's queue never backs up.
                        tokio::spawn(async move { while remote.read_rtp().await.is_ok() {} });
                    }
                }
            });
            rooms.push(room);
        }
    }
    let all = eventually(Duration::from_secs(60), || async {
        tracks.lock().unwrap().len() == SUBSCRIBERS
    })
    .await;
    assert!(
        all,
        "every subscriber receives the video ({} do)",
        tracks.lock().unwrap().len()
    );

    // Everyone asks for a keyframe every 100 ms for 5 s.
    let stats = server.transport().workers().to_vec();
    let pli_before: u64 = stats
        .iter()
        .map(|w| w.stats.pli_received.load(Ordering::Relaxed))
        .sum();
    let window_start = Instant::now();
    let storm: Vec<_> = tracks
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .map(|track| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                for _ in 0..50 {
                    tick.tick().await;
                    let _ = track.request_keyframe().await;
                }
            })
        })
        .collect();
    for s in storm {
        s.await.unwrap();
    }
    let window = window_start.elapsed();
    // Requests still in flight at the end of the window land within a few hundred ms.
    let arrived = eventually(Duration::from_secs(5), || async {
        let plis: u64 = stats
            .iter()
            .map(|w| w.stats.pli_received.load(Ordering::Relaxed))
            .sum();
        plis - pli_before >= (SUBSCRIBERS * 50) as u64 * 9 / 10
    })
    .await;
    assert!(arrived, "the server received the subscribers' PLIs");
    let in_window = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t >= window_start && **t <= window_start + window)
        .count();
    let per_second = in_window as f64 / window.as_secs_f64();
    eprintln!(
        "{} PLIs from {SUBSCRIBERS} subscribers over {window:?}: publisher got {in_window} keyframe requests ({per_second:.2}/s)",
        SUBSCRIBERS * 50
    );
    assert!(in_window >= 1, "keyframe requests do reach the publisher");
    // The throttle spaces requests 500 ms apart when the server sends them; delivery jitter
    // moves single arrivals, so judge the count over the window (both ends may hold one).
    assert!(
        in_window as f64 <= (window.as_secs_f64() * 2.0).floor() + 1.0,
        "at most 2 keyframe requests per second per layer, got {in_window} in {window:?}"
    );
    let throttled: u64 = stats
        .iter()
        .map(|w| w.stats.keyframe_requests_throttled.load(Ordering::Relaxed))
        .sum();
    assert!(throttled > 1_000, "the rest were throttled ({throttled})");

    media.abort();
    for room in rooms {
        let _ = room.leave().await;
    }
    let _ = publisher.leave().await;
    server.shutdown().await;
}
