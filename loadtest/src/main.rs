//! `prism-loadtest`: run a load-test scenario against a Prism server.
//!
//! ```sh
//! prism-loadtest --subscribers 100 --duration 30                  # flags only
//! prism-loadtest --scenario conf.toml --json report.json          # a TOML scenario
//! prism-loadtest --spawn-server target/release/prism ...          # start and measure a server
//! prism-loadtest --server-pid "$(pidof prism)" ...                # measure a running server
//! ```
//! Exit status: 0 clean run; 1 the run completed but some joins failed, participants were
//! disconnected or tracks never arrived; 2 the run could not start or was stopped (invalid
//! scenario, unreachable server, bad credentials, refused join); 130 interrupted (Ctrl-C; the
//! partial report is printed).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use prism_loadtest::procstat::SpawnedServer;
use prism_loadtest::runner::{self, RunOptions};
use prism_loadtest::scenario::{Layer, Layout, Quality, Scenario, VideoSpec};

/// Simulated Prism publishers and subscribers; reports join time, loss, one-way latency,
/// bitrate, received layer, the server's downlink estimate per subscriber over time with the
/// layers it forwarded, switches and pauses, and the server's CPU and memory, as tables and
/// JSON.
///
/// Flags override the scenario file, which overrides the defaults.
#[derive(Parser, Debug)]
#[command(name = "prism-loadtest", version)]
struct Args {
    /// Scenario file (TOML; see loadtest/scenarios/).
    #[arg(long, short = 's')]
    scenario: Option<PathBuf>,
    /// Scenario name shown in the report.
    #[arg(long)]
    name: Option<String>,
    /// Server base URL.
    #[arg(long, env = "PRISM_URL")]
    url: Option<String>,
    /// API key that issues the tokens (default: the dev key).
    #[arg(long, env = "PRISM_API_KEY")]
    api_key: Option<String>,
    /// API secret that signs the tokens (default: the dev secret).
    #[arg(long, env = "PRISM_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
    /// Rooms.
    #[arg(long)]
    rooms: Option<u32>,
    /// Video publishers per room.
    #[arg(long)]
    video_publishers: Option<u32>,
    /// Audio publishers per room (the first participants; they overlap the video ones).
    #[arg(long)]
    audio_publishers: Option<u32>,
    /// Subscribe-only participants per room.
    #[arg(long)]
    subscribers: Option<u32>,
    /// Whether publishers also subscribe to the others.
    #[arg(long)]
    publishers_subscribe: Option<bool>,
    /// Seconds measured after everyone joined.
    #[arg(long, short = 'd')]
    duration: Option<f64>,
    /// Joins per second (over all rooms).
    #[arg(long)]
    join_rate: Option<f64>,
    /// Seconds between the end of the joins and the measured window.
    #[arg(long)]
    settle: Option<f64>,
    /// Seconds one join may take.
    #[arg(long)]
    join_timeout: Option<f64>,
    /// Publish 720p simulcast layers q/h/f (RID simulcast; subscribers get the layer their
    /// --quality asks for).
    #[arg(long)]
    simulcast: bool,
    /// Video size of the (top) layer, WIDTHxHEIGHT.
    #[arg(long, value_parser = parse_size)]
    video_size: Option<(u16, u16)>,
    /// Video bitrate of the (top) layer, bits per second.
    #[arg(long)]
    video_bitrate: Option<u32>,
    /// Video frames per second.
    #[arg(long)]
    fps: Option<u32>,
    /// Seconds between scheduled keyframes.
    #[arg(long)]
    keyframe_interval: Option<f64>,
    /// Opus bitrate, bits per second.
    #[arg(long)]
    audio_bitrate: Option<u32>,
    /// Video tracks each subscriber shows at most (default: all).
    #[arg(long)]
    max_video_tracks: Option<u32>,
    /// Quality each subscriber asks for per shown video track, in order, the last for the
    /// rest: e.g. `high,low` (default high). Takes effect with --simulcast.
    #[arg(long, value_delimiter = ',', value_parser = parse_quality)]
    quality: Vec<Quality>,
    /// Write the JSON report to this file ("-" = stdout; the tables then go to stderr).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure this process as the server (CPU time and memory from /proc).
    #[arg(long, conflicts_with = "spawn_server")]
    server_pid: Option<u32>,
    /// Start this `prism` binary on the URL's port for the run, and measure it.
    #[arg(long)]
    spawn_server: Option<PathBuf>,
    /// First UDP media port of the spawned server (default: the server's, 7882).
    #[arg(long, requires = "spawn_server")]
    server_udp_port: Option<u16>,
    /// Media worker threads of the spawned server (default: one per core).
    #[arg(long, requires = "spawn_server")]
    server_workers: Option<usize>,
    /// No progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print the effective scenario as TOML and exit.
    #[arg(long)]
    print_scenario: bool,
}

fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got {s:?}"))?;
    let w = w.parse().map_err(|e| format!("width: {e}"))?;
    let h = h.parse().map_err(|e| format!("height: {e}"))?;
    Ok((w, h))
}

fn scenario(args: &Args) -> anyhow::Result<Scenario> {
    let mut s = match &args.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::default(),
    };
    macro_rules! set {
        ($field:ident, $value:expr) => {
            if let Some(v) = $value.clone() {
                s.$field = v;
            }
        };
    }
    set!(name, args.name);
    set!(url, args.url);
    set!(api_key, args.api_key);
    set!(api_secret, args.api_secret);
    set!(rooms, args.rooms);
    set!(video_publishers, args.video_publishers);
    set!(audio_publishers, args.audio_publishers);
    set!(subscribers, args.subscribers);
    set!(publishers_subscribe, args.publishers_subscribe);
    set!(duration_secs, args.duration);
    set!(join_rate, args.join_rate);
    set!(settle_secs, args.settle);
    set!(join_timeout_secs, args.join_timeout);
    if args.simulcast {
        let top = s.video.published_layer().bitrate_bps;
        s.video = VideoSpec {
            keyframe_interval_secs: s.video.keyframe_interval_secs,
            mtu: s.video.mtu,
            ..VideoSpec::simulcast_720p(top.max(1_500_000))
        };
    }
    if let Some(top) = s.video.layers.last_mut() {
        if let Some((w, h)) = args.video_size {
            top.width = w;
            top.height = h;
        }
        set_opt(&mut top.bitrate_bps, args.video_bitrate);
    }
    if let Some(fps) = args.fps {
        s.video
            .layers
            .iter_mut()
            .for_each(|l: &mut Layer| l.fps = fps);
    }
    set_opt(&mut s.video.keyframe_interval_secs, args.keyframe_interval);
    set_opt(&mut s.audio.bitrate_bps, args.audio_bitrate);
    if !args.quality.is_empty() {
        s.layout.qualities = args.quality.clone();
    }
    if args.max_video_tracks.is_some() {
        s.layout = Layout {
            max_video_tracks: args.max_video_tracks,
            ..s.layout
        };
    }
    s.validate()?;
    Ok(s)
}

fn set_opt<T: Copy>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("prism-loadtest: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn real_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let scenario = scenario(&args)?;
    if args.print_scenario {
        print!("{}", toml::to_string_pretty(&scenario)?);
        return Ok(ExitCode::SUCCESS);
    }
    let spawned = match &args.spawn_server {
        Some(path) => {
            let port = url_port(&scenario.url)?;
            let dev = scenario.api_key == prism_server::config::DEV_API_KEY
                && scenario.api_secret == prism_server::config::DEV_API_SECRET;
            let credentials = (!dev).then_some((&*scenario.api_key, &*scenario.api_secret));
            let server = SpawnedServer::start(
                path,
                port,
                args.server_udp_port,
                args.server_workers,
                credentials,
            )
            .await?;
            eprintln!(
                "started {} (pid {}) on port {port}",
                path.display(),
                server.pid()
            );
            Some(server)
        }
        None => None,
    };
    let server_pid = args.server_pid.or(spawned.as_ref().map(|s| s.pid()));
    if let Some(pid) = server_pid {
        prism_loadtest::procstat::usage(pid).context("--server-pid")?;
    }

    let (interrupt_tx, interrupt) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: finishing the partial report (Ctrl-C again to quit now)");
            let _ = interrupt_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let outcome = runner::run(
        scenario,
        RunOptions {
            server_pid,
            progress: !args.quiet,
        },
        interrupt,
    )
    .await?;
    drop(spawned);

    let report = &outcome.report;
    let anyone_joined = report.participants.joined + report.participants.disconnected > 0;
    if outcome.fatal.is_none() || anyone_joined {
        let json_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
        let text = report.render();
        if json_to_stdout {
            eprint!("{text}");
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", report.to_json())?;
        } else {
            print!("{text}");
            if let Some(path) = &args.json {
                std::fs::write(path, report.to_json())
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("JSON report written to {}", path.display());
            }
        }
    }
    if let Some(e) = outcome.fatal {
        bail!("{e}");
    }
    Ok(if outcome.interrupted {
        ExitCode::from(130)
    } else if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "prism-loadtest: the run completed with failures (joins failed, disconnects or \
             missing tracks); see the report"
        );
        ExitCode::from(1)
    })
}

fn url_port(url: &str) -> anyhow::Result<u16> {
    let parsed = url::Url::parse(url).with_context(|| format!("invalid --url {url:?}"))?;
    parsed
        .port_or_known_default()
        .with_context(|| format!("no port in {url:?}"))
}

fn parse_quality(text: &str) -> Result<Quality, String> {
    match text.trim() {
        "low" => Ok(Quality::Low),
        "medium" => Ok(Quality::Medium),
        "high" => Ok(Quality::High),
        other => Err(format!("{other:?} is not low, medium or high")),
    }
}
