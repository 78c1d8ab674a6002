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
    let _exclusive = exclusive().await;
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

// ---------------------------------------------------------------- loss and retransmission

#[path = "common/lossy.rs"]
mod lossy;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use lossy::{Impairment, LossyRelay};
use prism_client::synthetic::parse_vp8;

/// Publisher packet counters a subscriber received, and how many packets it read in all.
type Seen = (BTreeSet<u64>, usize);

struct LossRun {
    relay: LossyRelay,
    /// Per subscriber IP: unique publisher packets received, packets expected (from its first
    /// packet to the last sent), total packets read.
    received: HashMap<IpAddr, (usize, u64, usize)>,
    sent: u64,
    server: prism_server::Server,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One VP8 publisher (~1 Mbit/s) at `publisher_ip` and subscribers at `subscriber_ips`, all
/// through a lossy relay; media runs for `seconds` once everyone receives it.
async fn run_through_relay(
    impairment: Impairment,
    publisher_ip: &str,
    subscriber_ips: &[&str],
    seconds: u64,
) -> LossRun {
    let mut config = test_config();
    config.rtc.workers = 1;
    config.rtc.advertise_ips = vec![ip("127.0.0.2")];
    let server = start_with(config).await;
    let port = server.transport().workers()[0].bound.port();
    let relay = LossyRelay::start(
        SocketAddr::new(ip("127.0.0.2"), port),
        SocketAddr::new(ip("127.0.0.1"), port),
        impairment,
    )
    .await;
    let url = http_url(&server);
    let options = |addr: &str| ConnectOptions {
        udp_addrs: Some(vec![format!("{addr}:0")]),
        ..ConnectOptions::default()
    };

    let seen: Arc<Mutex<HashMap<IpAddr, Seen>>> = Arc::default();
    let mut rooms = Vec::new();
    for sub in subscriber_ips {
        let (room, mut events) = Room::connect(&url, &token("loss", sub), options(sub))
            .await
            .expect("subscriber connects");
        let (seen, sub_ip) = (seen.clone(), ip(sub));
        seen.lock().unwrap().insert(sub_ip, Default::default());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let RoomEvent::TrackSubscribed { remote, .. } = event {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        while let Ok(packet) = remote.read_rtp().await {
                            if let Some(stamp) = parse_vp8(&packet.payload) {
                                let mut seen = seen.lock().unwrap();
                                let entry = seen.entry(sub_ip).or_default();
                                entry.0.insert(stamp.counter);
                                entry.1 += 1;
                            }
                        }
                    });
                }
            }
        });
        rooms.push(room);
    }
    let (publisher, _events) =
        Room::connect(&url, &token("loss", "publisher"), options(publisher_ip))
            .await
            .expect("publisher connects");
    let video = publisher
        .publish_track(TrackOptions::video("camera", Codec::Vp8, 640, 360))
        .await
        .expect("publish");
    let sent = Arc::new(Mutex::new(0u64));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let media = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut source = Vp8Source::new(Vp8Config {
                bitrate_bps: 1_000_000,
                keyframe_interval: Duration::from_secs(60),
                ..Vp8Config::default()
            });
            let mut keyframes = video.keyframe_requests();
            let mut tick = tokio::time::interval(source.frame_interval());
            while !*stop.borrow() {
                tick.tick().await;
                if keyframes.try_recv().is_some() {
                    source.request_keyframe();
                }
                for packet in source.next_frame() {
                    let _ = video.write_rtp(&packet).await;
                    *sent.lock().unwrap() += 1;
                }
            }
        })
    };
    let flowing = eventually(Duration::from_secs(20), || async {
        seen.lock().unwrap().values().all(|(s, _)| s.len() > 30)
    })
    .await;
    assert!(flowing, "every subscriber receives video through the relay");
    tokio::time::sleep(Duration::from_secs(seconds)).await; // media runs under loss
    stop_tx.send(true).unwrap();
    media.await.unwrap();
    let last = *sent.lock().unwrap() - 1;
    // Retransmissions of the last packets take a few round trips.
    eventually(Duration::from_secs(3), || async {
        seen.lock()
            .unwrap()
            .values()
            .all(|(s, _)| s.contains(&last))
    })
    .await;
    let received = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(ip, (set, total))| {
            let first = *set.iter().next().unwrap();
            (*ip, (set.len(), last - first + 1, *total))
        })
        .collect();
    for room in rooms {
        let _ = room.leave().await;
    }
    let _ = publisher.leave().await;
    LossRun {
        relay,
        received,
        sent: last + 1,
        server,
    }
}

fn nack_stats(server: &prism_server::Server) -> (u64, u64, u64) {
    let w = &server.transport().workers()[0].stats;
    (
        w.nacks_received.load(Ordering::Relaxed),
        w.nack_retransmitted.load(Ordering::Relaxed),
        w.nack_missed.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_to_one_subscriber_is_repaired_for_it_alone() {
    let _exclusive = exclusive().await;
    let lossy_ip = "127.0.0.5";
    let mut impairment = Impairment::default();
    impairment.to_client.insert(ip(lossy_ip), 5);
    impairment.from_client.insert(ip(lossy_ip), 5);
    let run = run_through_relay(
        impairment,
        "127.0.0.6",
        &[lossy_ip, "127.0.0.7", "127.0.0.8"],
        6,
    )
    .await;
    let (nacked, resent, missed) = nack_stats(&run.server);
    let dropped = run
        .relay
        .counts(ip(lossy_ip))
        .dropped_to_client
        .load(Ordering::Relaxed);
    eprintln!(
        "relay dropped {dropped} datagrams to the lossy subscriber; server: {nacked} NACKed, {resent} resent, {missed} missed"
    );
    for (who, (unique, expected, total)) in &run.received {
        let complete = *unique as f64 / *expected as f64;
        eprintln!(
            "{who}: {unique} of {expected} packets ({:.3}%), {total} read, relay delivered {} RTP datagrams",
            complete * 100.0,
            run.relay.counts(*who).rtp_to_client.load(Ordering::Relaxed)
        );
        assert!(
            complete >= 0.995,
            "{who}: stream {:.3}% complete",
            complete * 100.0
        );
    }
    assert!(dropped > 20, "the relay did drop packets");
    assert!(resent > 0, "the server retransmitted");
    // The others get each packet once: nothing beyond the publisher's packets reaches them.
    for clean in ["127.0.0.7", "127.0.0.8"] {
        let delivered = run
            .relay
            .counts(ip(clean))
            .rtp_to_client
            .load(Ordering::Relaxed);
        assert!(
            delivered <= run.sent,
            "{clean} got {delivered} RTP datagrams for {} published packets",
            run.sent
        );
    }
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_percent_publisher_loss_is_repaired_for_every_subscriber() {
    let _exclusive = exclusive().await;
    let publisher_ip = "127.0.0.6";
    let mut impairment = Impairment::default();
    impairment.from_client.insert(ip(publisher_ip), 3);
    let run = run_through_relay(
        impairment,
        publisher_ip,
        &["127.0.0.7", "127.0.0.8", "127.0.0.9"],
        6,
    )
    .await;
    let dropped = run
        .relay
        .counts(ip(publisher_ip))
        .dropped_from_client
        .load(Ordering::Relaxed);
    eprintln!("relay dropped {dropped} datagrams from the publisher");
    assert!(dropped > 10, "the relay did drop the publisher's packets");
    for (who, (unique, expected, _)) in &run.received {
        let complete = *unique as f64 / *expected as f64;
        eprintln!(
            "{who}: {unique} of {expected} packets ({:.3}%)",
            complete * 100.0
        );
        assert!(
            complete >= 0.99,
            "{who}: stream {:.3}% complete",
            complete * 100.0
        );
    }
    run.server.shutdown().await;
}

// ---------------------------------------------------------------- sender reports

/// Seconds between the NTP epoch (1900) and the UNIX epoch.
const NTP_UNIX_OFFSET: f64 = 2_208_988_800.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_sender_reports_carry_the_publishers_clock() {
    let _exclusive = exclusive().await;
    use prism_client::synthetic::parse_vp8;

    let server = start().await;
    let url = http_url(&server);
    let (viewer, mut events) =
        Room::connect(&url, &token("sr", "viewer"), ConnectOptions::default())
            .await
            .expect("viewer");
    let (publisher, _events) =
        Room::connect(&url, &token("sr", "publisher"), ConnectOptions::default())
            .await
            .expect("publisher");
    let video = publisher
        .publish_track(TrackOptions::video("camera", Codec::Vp8, 640, 360))
        .await
        .expect("publish");
    let media = tokio::spawn(async move {
        let mut source = Vp8Source::new(Vp8Config::default());
        let mut keyframes = video.keyframe_requests();
        let mut tick = tokio::time::interval(source.frame_interval());
        loop {
            tick.tick().await;
            if keyframes.try_recv().is_some() {
                source.request_keyframe();
            }
            for packet in source.next_frame() {
                if video.write_rtp(&packet).await.is_err() {
                    return;
                }
            }
        }
    });
    let remote = loop {
        match events.recv().await.expect("events") {
            RoomEvent::TrackSubscribed { remote, .. } => break remote,
            _ => continue,
        }
    };
    // (RTP timestamp as the viewer received it, the publisher's wall clock when it made the
    // frame) for the first packet of each frame, and the viewer's latest sender report.
    let frames: Arc<Mutex<Vec<(u32, f64)>>> = Arc::default();
    let reader = {
        let (frames, remote) = (frames.clone(), remote.clone());
        tokio::spawn(async move {
            let mut last_ts = None;
            while let Ok(packet) = remote.read_rtp().await {
                if last_ts == Some(packet.header.timestamp) {
                    continue;
                }
                last_ts = Some(packet.header.timestamp);
                if let Some(stamp) = parse_vp8(&packet.payload) {
                    frames
                        .lock()
                        .unwrap()
                        .push((packet.header.timestamp, stamp.sent_at_micros as f64 / 1e6));
                }
            }
        })
    };
    let reported = eventually(Duration::from_secs(10), || async {
        remote.last_sender_report().is_some() && frames.lock().unwrap().len() > 90
    })
    .await;
    assert!(
        reported,
        "the viewer receives sender reports for the forwarded track"
    );
    let sr = remote.last_sender_report().unwrap();
    let sr_seconds =
        (sr.ntp >> 32) as f64 + (sr.ntp & 0xffff_ffff) as f64 / 4_294_967_296.0 - NTP_UNIX_OFFSET;
    // Where the report puts each frame on the wall clock, against when the publisher made it.
    let mut errors: Vec<f64> = frames
        .lock()
        .unwrap()
        .iter()
        .map(|(ts, made_at)| {
            let since_report = ts.wrapping_sub(sr.rtp) as i32 as f64 / 90_000.0;
            ((sr_seconds + since_report) - made_at).abs()
        })
        .collect();
    errors.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median_ms = errors[errors.len() / 2] * 1000.0;
    eprintln!(
        "sender report vs publisher clock over {} frames: median {median_ms:.3} ms, max {:.3} ms",
        errors.len(),
        errors.last().unwrap() * 1000.0
    );
    // The server's translation itself is exact to well under 1 ms (media::reports unit tests);
    // this end-to-end figure also holds the publisher's own report accuracy and frame pacing.
    assert!(
        median_ms < 5.0,
        "the viewer's reports place frames {median_ms:.3} ms off the publisher's clock"
    );
    let sent: u64 = server
        .transport()
        .workers()
        .iter()
        .map(|w| w.stats.sender_reports_sent.load(Ordering::Relaxed))
        .sum();
    assert!(sent > 0);
    media.abort();
    reader.abort();
    let _ = viewer.leave().await;
    let _ = publisher.leave().await;
    server.shutdown().await;
}
