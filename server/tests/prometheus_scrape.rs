//! Metrics as an operator sees them: Debian's `prometheus` server scrapes `/metrics` every
//! second during a call, and its query API shows the forwarded-packets counter growing and the
//! participant gauge matching the call. scripts/test.sh installs prometheus when missing.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// A prometheus server on loopback, killed and its data removed on drop.
struct Prometheus {
    child: tokio::process::Child,
    dir: PathBuf,
    url: String,
}

impl Prometheus {
    async fn start(target: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("prism-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prism\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus runs (apt-get install prometheus; scripts/test.sh does)");
        Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The value of an instant query's first sample, if any.
    async fn query(&self, query: &str) -> Option<f64> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_call() {
    let server = start().await;
    let _call = video_call(&server, "metrics", "publisher", "subscriber").await;

    let prometheus = Prometheus::start(&server.http_addr().to_string()).await;
    let forwarded = "sum(prism_rtp_forwarded_total)";
    let first = wait_some(&prometheus, forwarded, |v| v > 0.0).await;
    let later = wait_some(&prometheus, forwarded, |v| v > first).await;
    eprintln!("forwarded packets as Prometheus saw them: {first} then {later}");
    let participants = wait_some(&prometheus, "prism_participants", |v| v == 2.0).await;
    assert_eq!(participants, 2.0);
    let tracks = wait_some(&prometheus, "prism_published_tracks", |v| v == 1.0).await;
    assert_eq!(tracks, 1.0);
}

/// Polls `query` until its value satisfies `ok` (Prometheus scrapes every second).
async fn wait_some(p: &Prometheus, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let last = p.query(query).await;
        if let Some(v) = last.filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{query}: last value {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
