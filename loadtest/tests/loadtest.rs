//! The load tester against an in-process server on ephemeral ports: a small scenario with
//! under 1% loss, and the clear errors (unreachable server, bad credentials, refused join),
//! through the library and through the binary's exit status.

use std::process::Command;
use std::time::Duration;

use prism_loadtest::participant::JoinError;
use prism_loadtest::runner::{self, Outcome, RunOptions};
use prism_loadtest::scenario::Scenario;
use prism_server::Server;
use prism_server::config::Config;

fn test_config() -> Config {
    let mut config = Config {
        port: 0,
        ..Config::default()
    };
    config.rtc.udp_port = 0;
    config.rtc.workers = 2;
    config.room.empty_timeout_secs = 0;
    config
}

async fn start(config: Config) -> (Server, String) {
    let server = Server::start(config).await.expect("server starts");
    let url = format!("http://{}", server.http_addr());
    (server, url)
}

async fn run(scenario: Scenario) -> Outcome {
    let (_keep, interrupt) = tokio::sync::watch::channel(false);
    let options = RunOptions {
        server_pid: Some(std::process::id()),
        progress: false,
    };
    runner::run(scenario, options, interrupt)
        .await
        .expect("valid scenario")
}

/// A port nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_three_subscribers_under_one_percent_loss() {
    let (server, url) = start(test_config()).await;
    let scenario = Scenario {
        name: "test".into(),
        url,
        video_publishers: 1,
        audio_publishers: 1,
        subscribers: 3,
        duration_secs: 4.0,
        settle_secs: 1.0,
        ..Scenario::default()
    };
    let outcome = run(scenario).await;
    let report = &outcome.report;
    println!("{}", report.render());
    assert!(outcome.fatal.is_none() && !outcome.interrupted);
    assert_eq!(report.participants.joined, 4);
    assert_eq!(report.participants.tracks_expected, 6);
    assert_eq!(report.participants.tracks_received, 6);
    assert!(report.is_clean());
    for kind in [&report.video, &report.audio] {
        let k = kind.as_ref().expect("video and audio were received");
        assert_eq!(k.tracks, 3);
        assert!(k.packets_expected > 0);
        assert!(k.loss_pct < 1.0, "loss {}%", k.loss_pct);
        assert_eq!(k.bad_payloads, 0);
        let latency = k.latency_ms.expect("latency measured");
        assert!(latency.p50 > 0.0 && latency.p50 < 1000.0);
        assert!(k.join_ms.is_some() && k.bitrate_kbps.is_some());
    }
    let video = report.video.as_ref().unwrap();
    assert_eq!(video.layers.get("f 640x360"), Some(&3));
    // ~600 kbit/s sent; received includes RTP headers. Only plausibility: a busy machine slows
    // the publisher (the report notes when it falls behind), and timing is not asserted here.
    let kbps = video.bitrate_kbps.unwrap().p50;
    assert!((100.0..900.0).contains(&kbps), "{kbps} kbit/s");
    // The server forwarded the single layer throughout, and reported each subscriber's downlink.
    assert_eq!(
        video.time_on_layer_pct.get("f 640x360"),
        Some(&100.0),
        "{:?}",
        video.time_on_layer_pct
    );
    assert_eq!(video.layer_switches, 0);
    assert_eq!(report.subscribers.len(), 3);
    assert_eq!(report.downlink.as_ref().map(|d| d.subscribers), Some(3));
    let server_summary = report.server.as_ref().expect("measured");
    assert!(server_summary.cpu_us_per_forwarded_packet.is_some());
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["subscriptions"].as_array().unwrap().len(), 6);
    // NACK and PLI counts come from each subscriber's peer connection statistics.
    assert!(
        json["subscriptions"][0]["nacks_sent"].is_u64(),
        "{}",
        json["subscriptions"][0]
    );
    assert!(json["subscriptions"][0]["plis_sent"].is_u64());
    server.shutdown().await;
}

/// A simulcast publisher and subscribers asking for low then high: every layer is sent, each
/// subscriber receives the layer it asked for, and loss (per layer segment) stays under 1%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_subscribers_get_the_layers_they_ask_for() {
    use prism_loadtest::scenario::{Layout, Quality, VideoSpec};
    let (server, url) = start(test_config()).await;
    let scenario = Scenario {
        name: "simulcast".into(),
        url,
        video_publishers: 1,
        audio_publishers: 0,
        subscribers: 2,
        duration_secs: 4.0,
        settle_secs: 2.0,
        video: VideoSpec::simulcast_720p(1_500_000),
        layout: Layout {
            max_video_tracks: None,
            qualities: vec![Quality::Low],
        },
        ..Scenario::default()
    };
    let outcome = run(scenario).await;
    let report = &outcome.report;
    println!("{}", report.render());
    assert!(outcome.fatal.is_none() && !outcome.interrupted);
    assert!(report.is_clean(), "{:?}", report.notes);
    assert!(
        report.notes.iter().all(|n| !n.contains("simulcast")),
        "{:?}",
        report.notes
    );
    let video = report.video.as_ref().expect("video received");
    assert_eq!(video.tracks, 2);
    assert!(video.loss_pct < 1.0, "loss {}%", video.loss_pct);
    // Both subscribers asked for the lowest layer, and got it.
    assert_eq!(
        video.layers.get("q 320x180"),
        Some(&2),
        "{:?}",
        video.layers
    );
    // The server's stream states say the same, and each subscriber got connection-quality
    // reports with its downlink estimate.
    for row in &report.subscriptions {
        let layers = row.layers.as_ref().expect("stream states recorded");
        assert_eq!(layers.current.as_deref(), Some("q 320x180"), "{layers:?}");
        assert!(layers.time_on_secs.contains_key("q 320x180"), "{layers:?}");
    }
    assert_eq!(video.pauses.len(), 0, "{:?}", video.pauses);
    let downlink = report
        .downlink
        .as_ref()
        .expect("connection-quality reports");
    assert_eq!(downlink.subscribers, 2);
    assert!(
        downlink.estimate_kbps.is_some_and(|e| e.p50 > 0.0),
        "{downlink:?}"
    );
    assert_eq!(report.subscribers.len(), 2);
    for sub in &report.subscribers {
        assert!(sub.quality.reports >= 1, "{sub:?}");
        assert!(
            sub.quality.estimate_kbps.is_some_and(|e| e.min > 0.0),
            "{sub:?}"
        );
        assert!(!sub.samples.is_empty(), "{sub:?}");
    }
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let sample = &json["subscribers"][0]["samples"][0];
    assert!(
        sample["estimate_bps"].is_u64() && sample["t_secs"].is_f64(),
        "{sample}"
    );
    assert!(json["subscribers"][0]["estimate_kbps"]["p50"].is_f64());
    assert!(json["subscriptions"][0]["layers"]["events"].is_array());
    server.shutdown().await;
}

#[tokio::test]
async fn unreachable_server_is_a_clear_fatal_error() {
    let outcome = run(Scenario {
        url: dead_url(),
        subscribers: 5,
        ..Scenario::default()
    })
    .await;
    let e = outcome.fatal.expect("fatal");
    assert!(matches!(e, JoinError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot reach the server"));
    // Nobody else tried.
    assert_eq!(outcome.report.participants.not_started, 5);
}

#[tokio::test]
async fn bad_credentials_and_refused_joins_are_fatal() {
    let (server, url) = start(test_config()).await;
    let outcome = run(Scenario {
        url: url.clone(),
        api_secret: "not-the-secret-not-the-secret-not-the-secret".into(),
        ..Scenario::default()
    })
    .await;
    let e = outcome.fatal.expect("fatal");
    assert!(
        matches!(e, JoinError::Unauthorized { status: 401, .. }),
        "{e:?}"
    );
    let outcome = run(Scenario {
        url,
        api_key: "nobody".into(),
        ..Scenario::default()
    })
    .await;
    assert!(matches!(
        outcome.fatal,
        Some(JoinError::Unauthorized { .. })
    ));
    server.shutdown().await;

    let mut config = test_config();
    config.room.auto_create = false;
    let (server, url) = start(config).await;
    let outcome = run(Scenario {
        url,
        ..Scenario::default()
    })
    .await;
    let e = outcome.fatal.expect("fatal");
    assert!(matches!(e, JoinError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("404"), "{e}");
    server.shutdown().await;
}

fn loadtest(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prism-loadtest"))
        .args(args)
        .args(["--quiet", "--duration", "1"])
        .env_remove("PRISM_URL")
        .env_remove("PRISM_API_KEY")
        .env_remove("PRISM_API_SECRET")
        .output()
        .expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exits_non_zero_with_a_clear_message() {
    let out = loadtest(&["--url", &dead_url()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot reach the server"), "{stderr}");

    let (server, url) = start(test_config()).await;
    let url2 = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        loadtest(&[
            "--url",
            &url2,
            "--api-secret",
            "wrong-wrong-wrong-wrong-wrong-wrong",
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rejected the access token"), "{stderr}");

    let out = loadtest(&["--rooms", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rooms must be at least 1"), "{stderr}");

    // And a clean tiny run exits 0 with the report on stdout and JSON in a file.
    let json = std::env::temp_dir().join(format!("loadtest-{}.json", std::process::id()));
    let json_arg = json.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        loadtest(&[
            "--url",
            &url,
            "--subscribers",
            "1",
            "--settle",
            "0.5",
            "--json",
            &json_arg,
        ])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("video one-way latency ms"), "{stdout}");
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(parsed["participants"]["joined"], 2);
    let _ = std::fs::remove_file(json);
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await;
}
