//! Fan-out benchmark: one publisher (synthetic VP8, ~1 Mbit/s) to N subscribers over loopback,
//! with the server in its own process so its CPU time and memory are its own.
//!
//! ```sh
//! cargo build --release --bin prism --example fanout_bench
//! target/release/examples/fanout_bench --subscribers 100 --seconds 30
//! ```
//! Reports the server's CPU time per forwarded packet (process CPU time over the measured
//! window divided by the packets its subscribers received in that window), its resident memory
//! per subscriber connection, and the loss the subscribers saw.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use prism_client::synthetic::{Vp8Config, Vp8Source, parse_vp8};
use prism_client::{Codec, ConnectOptions, Room, RoomEvent, TrackOptions};
use prism_server::auth::AccessToken;
use prism_server::config::{DEV_API_KEY, DEV_API_SECRET};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Length of the measured window, after everyone receives media.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    #[arg(long, default_value_t = 1_000_000)]
    bitrate: u32,
    #[arg(long, default_value_t = 17880)]
    port: u16,
    #[arg(long, default_value_t = 17882)]
    udp_port: u16,
    /// Server media worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

/// Per subscriber: stamp counters received, and the highest seen.
#[derive(Default)]
struct Counts {
    received: u64,
    counters: Vec<u64>,
}

fn token(identity: &str) -> anyhow::Result<String> {
    Ok(AccessToken::new(DEV_API_KEY, DEV_API_SECRET)
        .identity(identity)
        .room("bench")
        .to_jwt()?)
}

/// (utime + stime) in seconds and resident set size in bytes of a process.
fn process_usage(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = fields[11].parse()?;
    let stime: f64 = fields[12].parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok(((utime + stime) / ticks, rss_kb * 1024))
}

struct ServerProcess(Child);
impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(args: &Args) -> anyhow::Result<ServerProcess> {
    let exe = std::env::current_exe()?;
    let prism = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("prism"))
        .context("locating the prism binary")?;
    if !prism.exists() {
        bail!(
            "{} not found: build it with cargo build --release --bin prism",
            prism.display()
        );
    }
    let child = Command::new(prism)
        .env("PRISM_PORT", args.port.to_string())
        .env("PRISM_RTC__UDP_PORT", args.udp_port.to_string())
        .env("PRISM_RTC__WORKERS", args.workers.to_string())
        .env("PRISM_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    Ok(ServerProcess(child))
}

async fn wait_for_http(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server did not start listening on port {port}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = start_server(&args)?;
    let pid = server.0.id();
    wait_for_http(args.port).await?;
    let url = format!("http://127.0.0.1:{}", args.port);

    let (publisher, _events) =
        Room::connect(&url, &token("publisher")?, ConnectOptions::default()).await?;
    let video = publisher
        .publish_track(TrackOptions::video("camera", Codec::Vp8, 1280, 720))
        .await?;
    let sent = Arc::new(Mutex::new(0u64));
    let sent_by_publisher = sent.clone();
    let bitrate = args.bitrate;
    let publishing = tokio::spawn(async move {
        let mut source = Vp8Source::new(Vp8Config {
            bitrate_bps: bitrate,
            keyframe_interval: Duration::from_secs(10),
            ..Vp8Config::default()
        });
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
                *sent_by_publisher.lock().unwrap() += 1;
            }
        }
    });
    // Let the publisher's connection settle before the memory baseline.
    while *sent.lock().unwrap() < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, rss_before) = process_usage(pid)?;

    let counts: Arc<Mutex<HashMap<usize, Counts>>> = Arc::default();
    let mut rooms = Vec::new();
    let started = Instant::now();
    for batch in (0..args.subscribers).collect::<Vec<_>>().chunks(10) {
        let mut joins = Vec::new();
        for &i in batch {
            let url = url.clone();
            let token = token(&format!("sub-{i}"))?;
            joins.push(tokio::spawn(async move {
                Room::connect(&url, &token, ConnectOptions::default())
                    .await
                    .map(|r| (i, r))
            }));
        }
        for join in joins {
            let (i, (room, mut events)) = join.await??;
            let counts = counts.clone();
            counts.lock().unwrap().insert(i, Counts::default());
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if let RoomEvent::TrackSubscribed { remote, .. } = event {
                        let counts = counts.clone();
                        tokio::spawn(async move {
                            while let Ok(packet) = remote.read_rtp().await {
                                if let Some(stamp) = parse_vp8(&packet.payload) {
                                    let mut all = counts.lock().unwrap();
                                    let c = all.entry(i).or_default();
                                    c.received += 1;
                                    c.counters.push(stamp.counter);
                                }
                            }
                        });
                    }
                }
            });
            rooms.push(room);
        }
    }
    // Wait until every subscriber receives media.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = counts
            .lock()
            .unwrap()
            .values()
            .filter(|c| c.received > 0)
            .count();
        if ready == args.subscribers {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {ready} of {} subscribers receive media",
                args.subscribers
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let setup = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await; // settle
    let (_, rss_after) = process_usage(pid)?;

    // Measured window.
    for c in counts.lock().unwrap().values_mut() {
        c.received = 0;
        c.counters.clear();
    }
    let (cpu_start, _) = process_usage(pid)?;
    let sent_start = *sent.lock().unwrap();
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (cpu_end, rss_end) = process_usage(pid)?;
    let sent_in_window = *sent.lock().unwrap() - sent_start;
    let window = window_start.elapsed();
    // Packets still in flight at the end of the window are not counted as lost: compare each
    // subscriber against the counter range it saw, minus a 200 ms tail.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (forwarded, mut losses) = {
        let all = counts.lock().unwrap();
        let mut forwarded = 0u64;
        let mut losses: Vec<f64> = Vec::new();
        for c in all.values() {
            forwarded += c.received;
            let (Some(&lo), Some(&hi)) = (c.counters.iter().min(), c.counters.iter().max()) else {
                losses.push(1.0);
                continue;
            };
            let mut unique = c.counters.clone();
            unique.sort_unstable();
            unique.dedup();
            let expected = hi - lo + 1;
            losses.push(1.0 - unique.len() as f64 / expected as f64);
        }
        (forwarded, losses)
    };
    losses.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let cpu = cpu_end - cpu_start;
    let per_packet_us = cpu / forwarded as f64 * 1e6;
    let mean_loss = losses.iter().sum::<f64>() / losses.len() as f64;
    let max_loss = losses.last().copied().unwrap_or(0.0);
    let pps_in = sent_in_window as f64 / window.as_secs_f64();
    println!("subscribers                 {}", args.subscribers);
    println!("setup (all receiving)       {:.1} s", setup.as_secs_f64());
    println!("publisher packets/s         {pps_in:.0}");
    println!(
        "forwarded packets/s         {:.0}",
        forwarded as f64 / window.as_secs_f64()
    );
    println!(
        "server CPU                  {:.1}% of one core",
        cpu / window.as_secs_f64() * 100.0
    );
    println!("server CPU per fwd packet   {per_packet_us:.2} µs");
    println!(
        "server RSS                  {:.1} MiB before subscribers, {:.1} MiB after, {:.1} MiB at end",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        rss_end as f64 / 1048576.0
    );
    println!(
        "memory per subscriber       {:.0} KiB",
        (rss_after.saturating_sub(rss_before)) as f64 / args.subscribers as f64 / 1024.0
    );
    println!(
        "loss per subscriber         mean {:.3}%, max {:.3}%",
        mean_loss * 100.0,
        max_loss * 100.0
    );
    publishing.abort();
    for room in rooms {
        let _ = room.leave().await;
    }
    let _ = publisher.leave().await;
    Ok(())
}
