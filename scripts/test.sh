#!/usr/bin/env bash
# The whole Prism test suite, exactly as CI runs it (.ci/run calls this). Works on a fresh Debian
# machine with the Rust toolchain: it installs anything else it needs (Chromium from apt and the
# browser tests' npm packages, each only when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

# Debian packages, each installed only when its command is missing (needs root or sudo).
apt_install() { # <command> <package>
    if command -v "$1" >/dev/null 2>&1; then return; fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null
}
# The impaired-link test (and the constrained-link browser test) make network namespaces joined
# by a veth, capped with tc tbf and lossy through nftables.
apt_install ip iproute2
apt_install nft nftables
# The metrics test scrapes the server with a real Prometheus.
apt_install prometheus prometheus

echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked

echo "== browser tests (headless Chromium)"
apt_install "${CHROMIUM_PATH:-chromium}" chromium
export CHROMIUM_PATH="${CHROMIUM_PATH:-$(command -v chromium)}"
# npm packages from the lock file, only when node_modules is missing or older than the lock.
(
    cd clients/web
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund
    fi
)
# The tests drive a release build of the real binary: they measure media timing, and a debug
# server's slower packet handling shows up as delay to Chromium's congestion control.
cargo build --release --locked -p prism-server --bin prism
export PRISM_BIN="$target_dir/release/prism"
export PRISM_TEST_RESULTS="$target_dir/test-results/browser"
(cd clients/web && node --test test/sdk.test.mjs test/data.test.mjs)
# Each file starts its own server and browser; one at a time (they measure media timing).
# Not in this list yet: constrained_link.test.mjs (issue 9, acceptance 4: a subscriber in a
# network namespace behind a 600 kbit/s tbf cap), which does not pass yet (see
# docs/benchmarks.md). Run it alone, as root, with PRISM_BIN set:
#   (cd clients/web && node --test test/constrained_link.test.mjs)
for file in browser publisher_bitrate data_channel simulcast whip dashboard; do
    (cd clients/web && node --test --test-concurrency=1 "test/$file.test.mjs")
done
echo "browser test results (screenshot, logs): $PRISM_TEST_RESULTS"
