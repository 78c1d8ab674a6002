//! Issue 3 in virtual time: retransmission, keyframe-request throttling and sender reports
//! through the real media worker, with real `rtc` peers over a simulated network. Each test
//! prints its figures (for docs/benchmarks.md) and asserts the acceptance criteria.

mod sim;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use prism_client::synthetic::Vp8Config;
use prism_server::media::layers::LayerRequest;
use prism_server::sim::SimPolicy;
use sim::net::LinkConfig;
use sim::report::{Completeness, timing};
use sim::world::World;

/// Media time simulated by the loss tests.
const RUN: Duration = Duration::from_secs(30);
/// Time left at the end for the last retransmissions before completeness is judged.
const SETTLE: Duration = Duration::from_secs(1);

fn video() -> Vp8Config {
    Vp8Config {
        bitrate_bps: 800_000,
        ..Vp8Config::default()
    }
}

/// A path with 30 ms one-way delay and up to 5 ms of jitter, no reordering.
fn path() -> LinkConfig {
    LinkConfig::delay_ms(30).jitter_ms(5)
}

/// One publisher and `subscribers` subscribers; `impair` shapes the paths once they are
/// connected.
fn room(seed: u64, subscribers: usize, impair: impl FnOnce(&mut World)) -> World {
    room_with(seed, subscribers, video(), impair)
}

fn room_with(
    seed: u64,
    subscribers: usize,
    video: Vp8Config,
    impair: impl FnOnce(&mut World),
) -> World {
    let mut world = World::new(seed, path(), SimPolicy::default());
    world.add_publisher(video);
    for _ in 0..subscribers {
        world.add_subscriber();
    }
    // Links are impaired once everyone is connected (see `World::connect_all`).
    world.connect_all(Duration::from_secs(5));
    impair(&mut world);
    world
}

fn completeness(world: &World, subscriber: usize) -> Completeness {
    Completeness::of(
        &world.publishers[0].sent,
        &world.subscribers[subscriber].received,
        world.now - SETTLE,
    )
}

#[test]
fn five_percent_loss_to_one_subscriber_is_repaired_for_it_alone() {
    let real = Instant::now();
    let mut world = room(3, 3, |w| {
        let lossy = w.subscriber_addr(0);
        w.configure_path(lossy, path(), path().loss(0.05));
    });
    world.run_for(RUN);
    let stats = world.server.stats();
    let lossy = completeness(&world, 0);
    let link = world
        .net
        .link(sim::world::server_addr(), world.subscriber_addr(0))
        .map(|l| l.stats)
        .unwrap_or_default();
    let nacked = world.subscribers[0]
        .peer
        .wire
        .lock()
        .unwrap()
        .nacked_packets;
    let upstream_nacks = world.publishers[0].peer.wire.lock().unwrap().nacked_to_us;
    println!(
        "5% loss server->subscriber (30 ms, 5 ms jitter): lossy subscriber {lossy}; link dropped {} of {} datagrams; subscriber NACKed {nacked}, server received {} NACKed packets, retransmitted {}, missed {}, suppressed {}; NACKs to the publisher {upstream_nacks}; {}",
        link.lost,
        link.sent,
        stats.nacks_received.load(Relaxed),
        stats.nack_retransmitted.load(Relaxed),
        stats.nack_missed.load(Relaxed),
        stats.nack_suppressed.load(Relaxed),
        timing(world.elapsed(), real.elapsed(), world.steps),
    );
    assert!(lossy.expected > 2000, "{lossy}");
    assert!(link.lost > 50, "the link did lose packets ({link:?})");
    assert!(lossy.ratio() >= 0.995, "lossy subscriber: {lossy}");
    for i in 1..world.subscribers.len() {
        let c = completeness(&world, i);
        println!("  clean subscriber {i}: {c}");
        assert_eq!(c.missing(), 0, "clean subscriber {i}: {c}");
        assert_eq!(
            c.duplicates, 0,
            "clean subscriber {i} got retransmissions: {c}"
        );
        let asked = world.subscribers[i]
            .peer
            .wire
            .lock()
            .unwrap()
            .nacked_packets;
        assert_eq!(asked, 0, "clean subscriber {i} had nothing to NACK");
    }
    assert_eq!(
        upstream_nacks, 0,
        "one subscriber's losses never cause upstream NACKs"
    );
}

#[test]
fn three_percent_uplink_loss_is_repaired_for_every_subscriber() {
    let real = Instant::now();
    let mut world = room(5, 3, |w| {
        let publisher = w.publisher_addr(0);
        w.configure_path(publisher, path().loss(0.03), path());
    });
    world.run_for(RUN);
    let stats = world.server.stats();
    let link = world
        .net
        .link(world.publisher_addr(0), sim::world::server_addr())
        .map(|l| l.stats)
        .unwrap_or_default();
    let wire = world.publishers[0].peer.wire.lock().unwrap();
    println!(
        "3% loss publisher->server (30 ms, 5 ms jitter): link dropped {} of {} datagrams; server NACKed {} packets to the publisher; {}",
        link.lost,
        link.sent,
        wire.nacked_to_us,
        timing(world.elapsed(), real.elapsed(), world.steps),
    );
    assert!(link.lost > 30, "the uplink did lose packets ({link:?})");
    assert!(wire.nacked_to_us > 0, "the server NACKed the publisher");
    drop(wire);
    for i in 0..world.subscribers.len() {
        let c = completeness(&world, i);
        println!(
            "  subscriber {i}: {c}; it NACKed {}, server retransmitted {} in all",
            world.subscribers[i]
                .peer
                .wire
                .lock()
                .unwrap()
                .nacked_packets,
            stats.nack_retransmitted.load(Relaxed)
        );
        assert!(c.expected > 2000, "{c}");
        assert!(c.ratio() >= 0.99, "subscriber {i}: {c}");
    }
}

/// Subscribers in the keyframe-request storm. A hundred, as the issue asks.
const STORM_SUBSCRIBERS: usize = 100;

#[test]
fn a_hundred_subscribers_asking_for_keyframes_cost_at_most_two_per_second() {
    let real = Instant::now();
    // A light stream: the storm is about requests, and each forwarded packet costs SRTP work
    // twice (server and client) in an unoptimised test build.
    let light = Vp8Config {
        bitrate_bps: 150_000,
        fps: 15,
        ..Vp8Config::default()
    };
    let mut world = room_with(7, STORM_SUBSCRIBERS, light, |_| {});
    // Everyone receives video first.
    let all = world.run_until_true(Duration::from_secs(10), |w| {
        w.subscribers.iter().all(|s| !s.received.is_empty())
    });
    assert!(all, "every subscriber receives video");
    println!(
        "{STORM_SUBSCRIBERS} subscribers receive video after {:?} virtual; setup took {:.2} s real",
        world.elapsed(),
        real.elapsed().as_secs_f64()
    );
    for s in &mut world.subscribers {
        s.send_pli_every(Duration::from_millis(100));
    }
    let window_start = world.now;
    let window = Duration::from_secs(5);
    world.run_for(window);
    let stats = world.server.stats();
    let plis: u64 = world.subscribers.iter().map(|s| s.plis_sent).sum();
    let requests: Vec<Duration> = world.publishers[0]
        .keyframe_requests
        .iter()
        .filter(|r| r.at >= window_start)
        .map(|r| r.at - window_start)
        .collect();
    // The most in any one second of the window, counted in whole seconds from its start.
    let per_second_max = (0..window.as_secs())
        .map(|s| requests.iter().filter(|t| t.as_secs() == s).count())
        .max()
        .unwrap_or(0);
    println!(
        "{STORM_SUBSCRIBERS} subscribers, a PLI each every 100 ms for {window:?}: {plis} PLIs sent, server received {}, sent {} keyframe requests, throttled {}; publisher got {} ({:.2}/s, at most {per_second_max} in one second); {}",
        stats.pli_received.load(Relaxed),
        stats.keyframe_requests.load(Relaxed),
        stats.keyframe_requests_throttled.load(Relaxed),
        requests.len(),
        requests.len() as f64 / window.as_secs_f64(),
        timing(world.elapsed(), real.elapsed(), world.steps),
    );
    assert!(
        plis as usize >= STORM_SUBSCRIBERS * 45,
        "the storm happened"
    );
    assert!(
        !requests.is_empty(),
        "keyframe requests reach the publisher"
    );
    assert!(
        per_second_max <= 2,
        "at most 2 keyframe requests per second per layer: {requests:?}"
    );
}

/// RTP ticks per millisecond of 90 kHz video.
const TICKS_PER_MS: f64 = 90.0;

/// NTP 32.32 fixed point to seconds.
fn ntp_seconds(ntp: u64) -> f64 {
    (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0
}

/// How one subscriber's sender reports compare with the publisher's, while it received layer
/// `ssrc` between `from` and `to`.
struct ReportCheck {
    /// Subscriber timestamp minus publisher timestamp on that layer.
    offset: u32,
    /// Whether every packet of the period had that same offset.
    consistent: bool,
    checked: usize,
    worst_ms: f64,
}

fn check_reports(
    world: &World,
    subscriber: usize,
    ssrc: u32,
    from: Instant,
    to: Instant,
) -> ReportCheck {
    let publisher = &world.publishers[0];
    let s = &world.subscribers[subscriber];
    // The subscriber's timestamps are the publisher's on that layer plus a fixed offset; the
    // stamp tells when the publisher generated each packet's frame.
    let offsets: Vec<u32> = s
        .received
        .iter()
        .filter(|r| r.at >= from && r.at < to)
        .filter_map(|r| {
            Some(
                r.timestamp
                    .wrapping_sub(publisher.timestamp_at(ssrc, r.sent_at)?),
            )
        })
        .collect();
    let offset = offsets.first().copied().unwrap_or_default();
    let consistent = !offsets.is_empty() && offsets.iter().all(|o| *o == offset);
    let sent_reports: Vec<_> = publisher
        .peer
        .wire
        .lock()
        .unwrap()
        .sender_reports
        .iter()
        .filter(|r| r.ssrc == ssrc)
        .copied()
        .collect();
    let mut worst_ms: f64 = 0.0;
    let mut checked = 0;
    for r in s
        .sender_reports
        .iter()
        .filter(|r| r.at >= from && r.at < to)
    {
        // The publisher's mapping: its latest report on that layer sent before this one
        // arrived (its clock is linear, so any of them would do).
        let Some(p) = sent_reports.iter().rev().find(|p| p.at < r.at) else {
            continue;
        };
        let dt = ntp_seconds(r.ntp) - ntp_seconds(p.ntp);
        let publisher_rtp = p.rtp.wrapping_add((dt * 90_000.0).round() as i64 as u32);
        let expected = publisher_rtp.wrapping_add(offset);
        let error_ms = (r.rtp.wrapping_sub(expected) as i32) as f64 / TICKS_PER_MS;
        worst_ms = worst_ms.max(error_ms.abs());
        checked += 1;
    }
    ReportCheck {
        offset,
        consistent,
        checked,
        worst_ms,
    }
}

/// A three-layer simulcast publisher whose layers start at different RTP timestamps, as
/// separate encoders do: a switch between layers makes the server rewrite timestamps.
fn simulcast_layers() -> Vec<(String, Vp8Config)> {
    [
        ("q", 150_000, 320, 180, 0x1111),
        ("h", 400_000, 640, 360, 0x2222),
        ("f", 1_000_000, 1280, 720, 0x3333),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (rid, bitrate_bps, width, height, ssrc))| {
        let config = Vp8Config {
            ssrc,
            bitrate_bps,
            width,
            height,
            initial_timestamp: 1_000_000_007u32.wrapping_mul(i as u32 + 1),
            ..Vp8Config::default()
        };
        (rid.to_owned(), config)
    })
    .collect()
}

#[test]
fn sender_reports_keep_the_publishers_clock_through_the_rewriting() {
    let real = Instant::now();
    let mut world = World::new(11, path(), SimPolicy::default());
    world.add_simulcast_publisher(simulcast_layers());
    world.add_subscriber();
    world.add_subscriber();
    world.connect_all(Duration::from_secs(5));
    let lossy = world.subscriber_addr(1);
    world.configure_path(lossy, path(), path().loss(0.05));
    let ssrcs = world.publishers[0].ssrcs();
    let (low, best) = (ssrcs[0], ssrcs[2]);
    // On the best layer first, then everyone moves to the lowest one.
    world.run_for(Duration::from_secs(8));
    let switch = world.now;
    for i in 0..world.subscribers.len() {
        world.request_layer(i, LayerRequest::Low);
    }
    world.run_for(Duration::from_secs(10));
    // Leave time for the layer to settle and the next reports after each change.
    let settle = Duration::from_secs(2);
    for i in 0..world.subscribers.len() {
        for (layer, ssrc, from, to) in [
            ("f", best, world.start + Duration::from_secs(3), switch),
            ("q", low, switch + settle, world.now),
        ] {
            let c = check_reports(&world, i, ssrc, from, to);
            println!(
                "subscriber {i} on layer {layer}: timestamps rewritten by {}, {} sender reports checked against the publisher's, worst NTP/RTP error {:.3} ms",
                c.offset as i32, c.checked, c.worst_ms
            );
            assert!(
                c.consistent,
                "subscriber {i} received layer {layer} with one offset"
            );
            assert!(
                c.checked >= 4,
                "subscriber {i} received sender reports on {layer}"
            );
            assert!(
                c.worst_ms <= 1.0,
                "subscriber {i} on {layer}: {:.3} ms",
                c.worst_ms
            );
            if layer == "q" {
                assert_ne!(c.offset, 0, "the switch did rewrite timestamps");
            }
        }
        // The server announced the switch.
        let states = &world.subscribers[i].stream_states;
        let on = |rid: &str| states.iter().any(|s| s.rid == rid && !s.paused);
        assert!(
            on("f") && on("q"),
            "subscriber {i} was told f, then q: {states:?}"
        );
    }
    println!("{}", timing(world.elapsed(), real.elapsed(), world.steps));
}
