#!/usr/bin/env bash
# Fan-out benchmark: one VP8 publisher (~1 Mbit/s) to N subscribers over loopback, the server in
# its own process. Usage: scripts/bench-fanout.sh [subscribers] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin prism --example fanout_bench
exec target/release/examples/fanout_bench --subscribers "${1:-100}" --seconds "${2:-30}"
