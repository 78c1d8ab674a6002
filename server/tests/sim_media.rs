//! The simulation's foundation: a publisher and a subscriber connect to the real media worker
//! over a simulated network in virtual time, media flows end to end, and a run is repeatable.

mod sim;

use std::time::{Duration, Instant};

use prism_client::synthetic::{OpusConfig, Vp8Config};
use prism_server::sim::SimPolicy;
use sim::net::LinkConfig;
use sim::report::{Completeness, timing};
use sim::world::World;

fn video() -> Vp8Config {
    Vp8Config {
        bitrate_bps: 500_000,
        ..Vp8Config::default()
    }
}

/// Runs one publisher and one subscriber over `link` for `seconds`; returns the world.
fn one_pair(seed: u64, link: LinkConfig, seconds: u64) -> World {
    let mut world = World::new(seed, LinkConfig::delay_ms(20), SimPolicy::default());
    world.add_publisher(video());
    world.add_subscriber();
    world.connect_all(Duration::from_secs(5));
    world.net.configure_all(link);
    world.run_for(Duration::from_secs(seconds));
    world
}

#[test]
fn media_flows_from_publisher_to_subscriber_in_virtual_time() {
    let real = Instant::now();
    let world = one_pair(1, LinkConfig::delay_ms(20), 10);
    let p = &world.publishers[0];
    let s = &world.subscribers[0];
    assert!(p.peer.connected_at.is_some(), "publisher connected");
    assert!(s.peer.connected_at.is_some(), "subscriber connected");
    let until = world.now - Duration::from_secs(1);
    let c = Completeness::of(&p.sent, &s.received, until);
    let first = s.received.first().map(|r| r.at - world.start);
    println!(
        "clean link: {c}; publisher connected at {:?}, first packet at {first:?}; {}",
        p.peer.connected_at.map(|t| t - world.start),
        timing(world.elapsed(), real.elapsed(), world.steps)
    );
    assert!(c.expected > 300, "{c}");
    assert_eq!(c.missing(), 0, "{c}");
    // One-way delay is 20 ms each way: latency through the server is at least 40 ms.
    let latency = s.received.iter().map(|r| r.at - r.sent_at).min().unwrap();
    assert!(latency >= Duration::from_millis(40), "{latency:?}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let link = LinkConfig::delay_ms(25).jitter_ms(5).loss(0.03);
    let fingerprint = |w: &World| {
        let s = &w.subscribers[0];
        let arrivals: Vec<(u64, Duration)> = s
            .received
            .iter()
            .map(|r| (r.counter, r.at - w.start))
            .collect();
        (arrivals, w.publishers[0].sent.len())
    };
    let a = fingerprint(&one_pair(42, link, 5));
    let b = fingerprint(&one_pair(42, link, 5));
    assert!(!a.0.is_empty());
    if let Some(i) = (0..a.0.len().min(b.0.len())).find(|&i| a.0[i] != b.0[i]) {
        let around =
            |v: &Vec<(u64, Duration)>| v[i.saturating_sub(2)..(i + 3).min(v.len())].to_vec();
        panic!(
            "runs diverge at arrival {i}: {:?} vs {:?}",
            around(&a.0),
            around(&b.0)
        );
    }
    assert_eq!(a, b);
}

#[test]
fn audio_and_video_both_arrive() {
    let mut world = World::new(9, LinkConfig::delay_ms(20), SimPolicy::default());
    world.add_publisher_with_audio(video(), OpusConfig::default());
    world.add_subscriber();
    world.connect_all(Duration::from_secs(5));
    world.run_for(Duration::from_secs(5));
    let p = &world.publishers[0];
    let s = &world.subscribers[0];
    let until = world.now - Duration::from_secs(1);
    let video = Completeness::of(&p.sent, &s.received, until);
    let audio = Completeness::of(&p.sent_audio, &s.received_audio, until);
    println!("audio {audio}; video {video}");
    // 20 ms packets for about 4 s.
    assert!(audio.expected > 150, "{audio}");
    assert_eq!(audio.missing(), 0, "{audio}");
    assert_eq!(video.missing(), 0, "{video}");
}
