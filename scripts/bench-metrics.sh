#!/usr/bin/env bash
# Metrics overhead: the fan-out benchmark with metrics off (telemetry.metrics = false) and on
# (histograms recorded, /metrics scraped every second, more often than any Prometheus would),
# alternating, then the mean server CPU per forwarded packet of each.
# Usage: scripts/bench-metrics.sh [subscribers] [seconds] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
subscribers="${1:-100}" seconds="${2:-30}" rounds="${3:-2}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin prism --example fanout_bench
bench="$target_dir/release/examples/fanout_bench"

# Waits (at most 15 min) until the 1-minute load average is below 1, so other work does not
# skew a run; says so when it could not.
wait_quiet() {
    local waited=0
    while awk '{ exit !($1 >= 1.0) }' /proc/loadavg; do
        if [ "$waited" -ge 900 ]; then
            echo "warning: load still $(cut -d' ' -f1 /proc/loadavg) after 15 min; running anyway"
            return
        fi
        sleep 10
        waited=$((waited + 10))
    done
}

run() { # <on|off>
    local scraper="" load
    wait_quiet
    load=$(cut -d' ' -f1 /proc/loadavg)
    if [ "$1" = on ]; then
        # The bench's server listens on 17880.
        (while sleep 1; do curl -fs http://127.0.0.1:17880/metrics >/dev/null || true; done) &
        scraper=$!
        PRISM_TELEMETRY__METRICS=true "$bench" --subscribers "$subscribers" --seconds "$seconds" >"$log" 2>&1
    else
        PRISM_TELEMETRY__METRICS=false "$bench" --subscribers "$subscribers" --seconds "$seconds" >"$log" 2>&1
    fi
    [ -n "$scraper" ] && kill "$scraper"
    local us
    us=$(sed -n 's/^server CPU per fwd packet *\([0-9.]*\).*/\1/p' "$log")
    echo "metrics $1: load $load before, $us us per forwarded packet"
    echo "$1 $us" >>"$results"
}

results=$(mktemp) log=$(mktemp)
for _ in $(seq "$rounds"); do
    run off
    run on
done
awk '{ sum[$1] += $2; n[$1]++ } END {
    off = sum["off"] / n["off"]; on = sum["on"] / n["on"];
    printf "mean off %.2f us, on %.2f us: on is %+.1f%%\n", off, on, (on - off) / off * 100 }' "$results"
rm -f "$results" "$log"
