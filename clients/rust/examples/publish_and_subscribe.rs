//! Publishes synthetic VP8 + Opus as one participant and subscribes to it as another, then
//! prints packet counts, losses and latency.
//!
//! ```text
//! cargo run -p prism-client --example publish_and_subscribe -- \
//!     http://127.0.0.1:7880 <publisher-token> <subscriber-token> [seconds]
//! ```
//! Arguments fall back to PRISM_URL, PRISM_PUBLISHER_TOKEN, PRISM_SUBSCRIBER_TOKEN and
//! PRISM_SECONDS. The tokens must be for the same room (`prism token create ...`).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use prism_client::synthetic::{self, OpusConfig, OpusSource, Vp8Config, Vp8Source};
use prism_client::{Codec, ConnectOptions, RemoteTrack, Room, RoomEvent, TrackOptions};

fn arg(args: &[String], i: usize, env: &str) -> Option<String> {
    args.get(i).cloned().or_else(|| std::env::var(env).ok())
}

#[derive(Debug, Default)]
struct Stats {
    packets: u64,
    bytes: u64,
    stamped: u64,
    corrupt: u64,
    max_counter: Option<u64>,
    latency_sum: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = arg(&args, 0, "PRISM_URL").unwrap_or_else(|| "http://127.0.0.1:7880".into());
    let pub_token = arg(&args, 1, "PRISM_PUBLISHER_TOKEN").context("publisher token")?;
    let sub_token = arg(&args, 2, "PRISM_SUBSCRIBER_TOKEN").context("subscriber token")?;
    let seconds: u64 = arg(&args, 3, "PRISM_SECONDS")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);

    let (publisher, mut pub_events) =
        Room::connect(&url, &pub_token, ConnectOptions::default()).await?;
    println!(
        "publisher joined room {:?} as {}",
        publisher.room_info().name,
        publisher.local_participant().sid
    );
    let (subscriber, mut sub_events) =
        Room::connect(&url, &sub_token, ConnectOptions::default()).await?;
    println!(
        "subscriber joined as {}",
        subscriber.local_participant().sid
    );

    let video = publisher
        .publish_track(TrackOptions::video("synthetic-vp8", Codec::Vp8, 640, 360))
        .await?;
    let audio = publisher
        .publish_track(TrackOptions::audio("synthetic-opus"))
        .await?;
    println!("published video {} and audio {}", video.sid(), audio.sid());

    // Video: one frame per interval, a keyframe whenever the server asks.
    let video_task = tokio::spawn({
        let video = video.clone();
        async move {
            let mut source = Vp8Source::new(Vp8Config::default());
            let mut requests = video.keyframe_requests();
            let mut tick = tokio::time::interval(source.frame_interval());
            let mut keyframe_requests = 0u64;
            loop {
                tick.tick().await;
                while requests.try_recv().is_some() {
                    keyframe_requests += 1;
                    source.request_keyframe();
                }
                for packet in source.next_frame() {
                    if video.write_rtp(&packet).await.is_err() {
                        return (source.frames(), keyframe_requests);
                    }
                }
            }
        }
    });
    let audio_task = tokio::spawn({
        let audio = audio.clone();
        async move {
            let mut source = OpusSource::new(OpusConfig::default());
            let mut tick = tokio::time::interval(source.packet_interval());
            let mut sent = 0u64;
            loop {
                tick.tick().await;
                if audio.write_rtp(&source.next_packet()).await.is_err() {
                    return sent;
                }
                sent += 1;
            }
        }
    });
    // The publisher's own events are only logged.
    let pub_log = tokio::spawn(async move {
        while let Some(event) = pub_events.recv().await {
            if let RoomEvent::Error(e) = &event {
                eprintln!("publisher error: {e}");
            }
        }
    });

    // Subscriber: read every subscribed track until the deadline.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut readers = vec![];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(event) = tokio::time::timeout(remaining, sub_events.recv()).await else {
            break;
        };
        match event {
            Some(RoomEvent::TrackSubscribed { track, remote, .. }) => {
                println!("subscribed to {} ({})", track.sid, track.mime_type);
                readers.push(tokio::spawn(read_track(remote, track.mime_type, deadline)));
            }
            Some(RoomEvent::Error(e)) => eprintln!("subscriber error: {e}"),
            Some(RoomEvent::Disconnected { reason, message }) => {
                println!("subscriber disconnected: {reason:?} {message}");
                break;
            }
            Some(_) => {}
            None => break,
        }
    }

    let mut all: HashMap<String, Stats> = HashMap::new();
    for reader in readers {
        let (sid, stats) = reader.await?;
        all.insert(sid, stats);
    }
    subscriber.leave().await?;
    publisher.leave().await?;
    let (frames, keyframe_requests) = video_task.await?;
    let audio_sent = audio_task.await?;
    pub_log.await?;

    println!(
        "sent {frames} video frames ({keyframe_requests} keyframe requests), {audio_sent} audio packets"
    );
    for (sid, s) in &all {
        let expected = s.max_counter.map_or(0, |m| m + 1);
        let mean = if s.stamped > 0 {
            s.latency_sum / s.stamped as u32
        } else {
            Duration::ZERO
        };
        println!(
            "{sid}: {} packets, {} bytes, {} corrupt, ~{} missing, mean latency {:?}",
            s.packets,
            s.bytes,
            s.corrupt,
            expected.saturating_sub(s.stamped),
            mean
        );
    }
    Ok(())
}

async fn read_track(remote: RemoteTrack, mime: String, deadline: Instant) -> (String, Stats) {
    let mut stats = Stats::default();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(Ok(packet)) = tokio::time::timeout(remaining, remote.read_rtp()).await else {
            break;
        };
        stats.packets += 1;
        stats.bytes += packet.payload.len() as u64;
        if let Some(stamp) = synthetic::parse_payload(&mime, &packet.payload) {
            stats.stamped += 1;
            stats.corrupt += u64::from(!stamp.intact);
            stats.max_counter = stats.max_counter.max(Some(stamp.counter));
            stats.latency_sum += stamp.latency(SystemTime::now());
        }
    }
    (remote.sid().to_owned(), stats)
}
