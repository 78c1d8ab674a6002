//! docs/grafana/prism.json is a valid Grafana dashboard whose every query names metrics that
//! `/metrics` really serves (a renamed metric would leave an empty panel otherwise).

mod common;

use std::collections::BTreeSet;

use common::*;

/// Every `prism_*` name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("prism_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every sample name of an OpenMetrics text exposition.
fn served_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_served_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/prism.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard file"))
            .expect("valid JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());

    let server = start().await;
    let text = reqwest::get(format!("{}/metrics", http_url(&server)))
        .await
        .expect("scrape")
        .text()
        .await
        .unwrap();
    let served = served_names(&text);
    assert!(served.contains("prism_rtp_forwarded_total"), "{served:?}");

    let mut queried = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("panel title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no queries");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} queries no prism metric");
            for name in names {
                assert!(served.contains(&name), "{title}: {name} is not in /metrics");
                queried.insert(name);
            }
        }
    }
    // The variable's query too.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    for v in variables.iter().filter_map(|v| v["query"].as_str()) {
        for name in metric_names(v) {
            assert!(
                served.contains(&name),
                "variable: {name} is not in /metrics"
            );
        }
    }
    eprintln!("{} metrics queried, all served", queried.len());
    server.shutdown().await;
}
