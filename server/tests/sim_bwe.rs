//! Issue 9 in virtual time: the downlink estimate and the stream allocator through the real
//! media worker, with real `rtc` peers (their transport-wide CC feedback drives the server's
//! estimator) over simulated links with rate caps. Each test prints its figures (for
//! docs/benchmarks.md) and asserts the acceptance criteria.

mod sim;

use std::time::{Duration, Instant};

use prism_client::synthetic::{OpusConfig, Vp8Config};
use prism_server::media::layers::LayerRequest;
use prism_server::sim::SimPolicy;
use sim::net::LinkConfig;
use sim::peer::{ReceivedPacket, StreamStateChange};
use sim::report::timing;
use sim::world::World;

const DELAY_MS: u64 = 20;
/// Bottleneck buffer: 150 ms at the link rate, a common home-router depth.
const BUFFER: Duration = Duration::from_millis(150);

fn capped(bps: u64) -> LinkConfig {
    let bytes = (bps as f64 / 8.0 * BUFFER.as_secs_f64()) as usize;
    LinkConfig::delay_ms(DELAY_MS).rate(bps, bytes.max(3000))
}

/// Three layers (q 150k, h 500k, f 1.5M at 320x180 / 640x360 / 1280x720); `base` makes the
/// SSRCs unique per publisher.
fn layers(base: u32, rates: [u32; 3]) -> Vec<(String, Vp8Config)> {
    [("q", 320, 180), ("h", 640, 360), ("f", 1280, 720)]
        .into_iter()
        .zip(rates)
        .enumerate()
        .map(|(i, ((rid, width, height), bitrate_bps))| {
            let config = Vp8Config {
                ssrc: base + i as u32,
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

fn audio(ssrc: u32) -> OpusConfig {
    OpusConfig {
        ssrc,
        bitrate_bps: 32_000,
        ..OpusConfig::default()
    }
}

/// The rank forwarded at `at` according to the stream-state reports (None: paused or before
/// the first report).
fn rank_at(states: &[StreamStateChange], track: &str, at: Instant) -> Option<usize> {
    states
        .iter()
        .rfind(|s| s.track_sid == track && s.at <= at)
        .and_then(|s| (!s.paused).then_some(s.rank))
}

/// Layer changes (including pauses) of `track` within `[from, to)`.
fn switches(states: &[StreamStateChange], track: &str, from: Instant, to: Instant) -> usize {
    states
        .iter()
        .filter(|s| s.track_sid == track && s.at >= from && s.at < to)
        .count()
}

/// Longest time without an audio packet within `[from, to]`, and when it ended.
fn longest_audio_gap(received: &[ReceivedPacket], from: Instant, to: Instant) -> Duration {
    audio_gap_at(received, from, to).0
}

fn audio_gap_at(received: &[ReceivedPacket], from: Instant, to: Instant) -> (Duration, Instant) {
    let mut last = from;
    let mut worst = (Duration::ZERO, from);
    for p in received.iter().filter(|p| p.at >= from && p.at <= to) {
        if p.at - last > worst.0 {
            worst = (p.at - last, p.at);
        }
        last = p.at;
    }
    if to.saturating_duration_since(last) > worst.0 {
        worst = (to - last, to);
    }
    worst
}

fn video_track(world: &World, publisher: usize) -> String {
    let conn = world.publisher_conn(publisher).expect("publisher");
    let (p, id) = world
        .tracks()
        .iter()
        .find(|(p, id)| *p == conn && id.starts_with("video"))
        .unwrap_or_else(|| panic!("no video track of {conn:?} in {:?}", world.tracks()))
        .clone();
    World::track_sid(p, &id)
}

/// The simulation's seed: `default`, or SIM_SEED to explore others.
fn seed(default: u64) -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Logs to stderr when PRISM_TEST_LOG is set (e.g. `prism_server::transport=debug`).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PRISM_TEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

/// Acceptance 1 and 2: 3 Mbit/s -> 500 kbit/s for 60 s -> 3 Mbit/s, one three-layer publisher
/// with audio, one subscriber behind the capped link.
#[test]
fn capacity_steps_fit_under_the_cap_and_recover_to_the_top_layer() {
    logs();
    let real = std::time::Instant::now();
    let mut world = World::new(
        seed(91),
        LinkConfig::delay_ms(DELAY_MS),
        SimPolicy::default(),
    );
    world.add_simulcast_publisher_with_audio(
        layers(0x1000, [150_000, 500_000, 1_500_000]),
        audio(0x1900),
    );
    world.add_subscriber();
    world.connect_all(Duration::from_secs(5));
    // Tracks open (and subscriptions start) with the first media.
    world.run_for(Duration::from_secs(1));
    let sub = world.subscriber_addr(0);
    world.configure_path(sub, LinkConfig::delay_ms(DELAY_MS), capped(3_000_000));
    let track = video_track(&world, 0);

    // Phase 1: 3 Mbit/s. The top layer (1.5M + audio) fits.
    world.run_for(Duration::from_secs(15));
    let t_drop = world.now;
    let s = &world.subscribers[0];
    assert_eq!(
        rank_at(&s.stream_states, &track, t_drop),
        Some(2),
        "on the top layer at 3 Mbit/s: {:?}",
        s.stream_states
    );

    // Phase 2: 500 kbit/s for 60 s.
    world.configure_path(sub, LinkConfig::delay_ms(DELAY_MS), capped(500_000));
    let down = |w: &World| {
        w.net
            .link(sim::world::server_addr(), sub)
            .map(|l| l.stats)
            .unwrap_or_default()
    };
    // Fits: on the lowest layer (150k + audio; the middle one needs 500k alone).
    let fitted = world.run_until_true(Duration::from_secs(10), |w| {
        rank_at(&w.subscribers[0].stream_states, &track, w.now) == Some(0)
    });
    let fit_after = world.now - t_drop;
    assert!(fitted, "never fitted under 500 kbit/s");
    let t_from = t_drop + Duration::from_secs(2).max(fit_after);
    world.run_until(t_from);
    let before = down(&world);
    let t_stable = t_drop + Duration::from_secs(5);
    world.run_until(t_drop + Duration::from_secs(60));
    let after = down(&world);
    let datagrams = after.sent - before.sent;
    let datagrams_lost = (after.overflowed + after.lost) - (before.overflowed + before.lost);
    let t_up = world.now;
    let s = &world.subscribers[0];
    let stable_switches = switches(&s.stream_states, &track, t_stable, t_up);
    // Video loss after fitting: the lowest layer's packets (the one forwarded all along, see
    // the switch count) that never arrived, repairs included. The link's own datagram loss
    // also counts probe padding, which is meant to find the limit.
    let received: std::collections::HashSet<u64> = s
        .received
        .iter()
        .filter(|p| p.at >= t_from)
        .map(|p| p.counter)
        .collect();
    let sent_q: Vec<u64> = world.publishers[0]
        .sent_on(0x1000)
        .into_iter()
        .filter(|p| p.at >= t_from && p.at < t_up - Duration::from_secs(1))
        .map(|p| p.counter)
        .collect();
    let lost = sent_q.iter().filter(|c| !received.contains(c)).count();
    let sent = sent_q.len();
    let loss = lost as f64 / sent.max(1) as f64;

    // Phase 3: 3 Mbit/s again.
    world.configure_path(sub, LinkConfig::delay_ms(DELAY_MS), capped(3_000_000));
    let recovered = world.run_until_true(Duration::from_secs(20), |w| {
        rank_at(&w.subscribers[0].stream_states, &track, w.now) == Some(2)
    });
    let recover_after = world.now - t_up;
    world.run_for(Duration::from_secs(2));
    let s = &world.subscribers[0];
    let (audio_gap, gap_end) = audio_gap_at(
        &s.received_audio,
        t_drop - Duration::from_secs(5),
        world.now,
    );
    println!(
        "longest audio gap ends {:.2} s after the drop",
        (gap_end - t_drop).as_secs_f64()
    );
    let estimates: Vec<String> = s
        .quality
        .iter()
        .filter(|(at, _)| *at >= t_drop - Duration::from_secs(2))
        .step_by(2)
        .map(|(at, q)| {
            format!(
                "{:.0}s:{}k",
                (*at - t_drop).as_secs_f64(),
                q.estimate_bps / 1000
            )
        })
        .collect();
    println!(
        "capacity steps 3M -> 500k -> 3M: fitted (lowest layer) {:.2} s after the drop; loss \
         after fitting {:.2}% ({lost}/{sent} video packets; the link dropped {datagrams_lost} of \
         {datagrams} datagrams, probes included); {stable_switches} switches in the 55 s at 500k; top \
         layer {:.2} s after the recovery; longest audio gap {} ms; estimates {estimates:?}; {}",
        fit_after.as_secs_f64(),
        loss * 100.0,
        recover_after.as_secs_f64(),
        audio_gap.as_millis(),
        timing(world.elapsed(), real.elapsed(), world.steps),
    );
    assert!(
        fit_after <= Duration::from_secs(2),
        "fitted after {fit_after:?}"
    );
    assert!(loss < 0.02, "loss {:.2}% after fitting", loss * 100.0);
    assert!(
        stable_switches <= 2,
        "{stable_switches} layer switches in 55 s at a stable cap: {:?}",
        s.stream_states
    );
    assert!(recovered, "never back on the top layer");
    assert!(
        recover_after <= Duration::from_secs(8),
        "top layer only {recover_after:?} after the recovery"
    );
    assert!(
        audio_gap < Duration::from_millis(200),
        "audio interrupted for {audio_gap:?}"
    );
}

/// Acceptance 3: five video tracks under 1.5 Mbit/s; the pinned one gets a high layer (h or
/// f), the others the lowest layer or paused; audio never stops.
#[test]
fn a_pinned_track_gets_a_high_layer_among_five_under_a_cap() {
    logs();
    let real = std::time::Instant::now();
    let mut world = World::new(
        seed(93),
        LinkConfig::delay_ms(DELAY_MS),
        SimPolicy::default(),
    );
    for p in 0..5u32 {
        let base = 0x2000 + p * 0x100;
        if p == 0 {
            world.add_simulcast_publisher_with_audio(
                layers(base, [100_000, 250_000, 700_000]),
                audio(base + 0x80),
            );
        } else {
            world.add_simulcast_publisher(layers(base, [100_000, 250_000, 700_000]));
        }
    }
    world.add_subscriber();
    world.connect_all(Duration::from_secs(5));
    // Tracks open (and subscriptions start) with the first media.
    world.run_for(Duration::from_secs(1));
    let sub = world.subscriber_addr(0);
    let pinned = 2;
    world.track_settings(0, pinned, LayerRequest::Best, true);
    world.configure_path(sub, LinkConfig::delay_ms(DELAY_MS), capped(1_500_000));
    let t0 = world.now;
    world.run_for(Duration::from_secs(30));
    let end = world.now;
    let s = &world.subscribers[0];
    let ranks: Vec<Option<usize>> = (0..5)
        .map(|p| rank_at(&s.stream_states, &video_track(&world, p), end))
        .collect();
    let audio_gap = longest_audio_gap(&s.received_audio, t0 + Duration::from_secs(5), end);
    let last = s.quality.last().map(|(_, q)| *q);
    println!(
        "five tracks under 1.5 Mbit/s, track {pinned} pinned: ranks {ranks:?} (None = paused); \
         longest audio gap after 5 s {} ms; last report {last:?}; {}",
        audio_gap.as_millis(),
        timing(world.elapsed(), real.elapsed(), world.steps),
    );
    // "A high layer" for the pinned track (h or f), "low layers" for the others: below the
    // pinned one's, and none on the top layer; at most one of them above the lowest.
    let pinned_rank = ranks[pinned].unwrap_or(0);
    assert!(
        pinned_rank >= 1,
        "the pinned track is not on a high layer: {ranks:?}"
    );
    let others: Vec<_> = (0..5).filter(|&p| p != pinned).map(|p| ranks[p]).collect();
    for (p, rank) in others.iter().enumerate() {
        assert!(
            rank.is_none_or(|r| r < pinned_rank),
            "track {p} on {rank:?}, not below the pinned track: {ranks:?}"
        );
    }
    assert!(
        others.iter().filter(|r| r.is_some_and(|r| r > 0)).count() <= 1,
        "more than one other track above the lowest layer: {ranks:?}"
    );
    assert!(
        audio_gap < Duration::from_millis(200),
        "audio interrupted for {audio_gap:?}"
    );
}

/// Acceptance 5: one subscriber's bad link (400 kbit/s, 3% loss) changes nothing for another
/// on a clean link: it stays on the top layer and receives everything.
#[test]
fn one_bad_link_does_not_affect_the_others() {
    logs();
    let real = std::time::Instant::now();
    let mut world = World::new(
        seed(95),
        LinkConfig::delay_ms(DELAY_MS),
        SimPolicy::default(),
    );
    world.add_simulcast_publisher_with_audio(
        layers(0x3000, [150_000, 500_000, 1_500_000]),
        audio(0x3900),
    );
    world.add_subscriber();
    world.add_subscriber();
    world.connect_all(Duration::from_secs(5));
    // Tracks open (and subscriptions start) with the first media.
    world.run_for(Duration::from_secs(1));
    let bad = world.subscriber_addr(1);
    world.configure_path(
        bad,
        LinkConfig::delay_ms(DELAY_MS),
        capped(400_000).loss(0.03),
    );
    let track = video_track(&world, 0);
    world.run_for(Duration::from_secs(3));
    let t0 = world.now;
    world.run_for(Duration::from_secs(30));
    let end = world.now;
    let good = &world.subscribers[0];
    let poor = &world.subscribers[1];
    let good_switches = switches(&good.stream_states, &track, t0, end);
    let good_rank = rank_at(&good.stream_states, &track, end);
    let poor_rank = rank_at(&poor.stream_states, &track, end);
    // Everything the publisher sent on the top layer reached the good subscriber.
    let top_ssrc = 0x3002;
    let sent: Vec<_> = world.publishers[0]
        .sent_on(top_ssrc)
        .into_iter()
        .filter(|p| p.at >= t0 && p.at < end - Duration::from_secs(1))
        .collect();
    let got: std::collections::HashSet<u64> = good.received.iter().map(|p| p.counter).collect();
    let missing = sent.iter().filter(|p| !got.contains(&p.counter)).count();
    println!(
        "one bad link (400 kbit/s, 3% loss) next to a clean one: clean subscriber on rank \
         {good_rank:?} with {good_switches} switches, missing {missing} of {} top-layer packets; \
         the bad one on {poor_rank:?}; {}",
        sent.len(),
        timing(world.elapsed(), real.elapsed(), world.steps),
    );
    assert_eq!(good_rank, Some(2));
    assert_eq!(good_switches, 0, "{:?}", good.stream_states);
    assert_eq!(missing, 0);
    assert!(
        matches!(poor_rank, None | Some(0)),
        "the bad link's subscriber on {poor_rank:?}"
    );
}
