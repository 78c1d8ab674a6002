#!/usr/bin/env bash
# The whole Prism test suite, exactly as CI runs it (.ci/run calls this). Works on a fresh Debian
# machine with the Rust toolchain: it installs anything else it needs (Chromium from apt and the
# browser tests' npm packages, each only when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked

echo "== browser tests (headless Chromium)"
# Debian's chromium, installed only when missing (needs root or sudo).
if ! command -v "${CHROMIUM_PATH:-chromium}" >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
export CHROMIUM_PATH="${CHROMIUM_PATH:-$(command -v chromium)}"
# npm packages from the lock file, only when node_modules is missing or older than the lock.
(
    cd clients/web
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund
    fi
)
# The tests drive the real binary (the one `cargo test` just built).
cargo build --locked -p prism-server --bin prism
export PRISM_BIN="$target_dir/debug/prism"
export PRISM_TEST_RESULTS="$target_dir/test-results/browser"
(cd clients/web && node --test test/sdk.test.mjs)
# One logged retry for the three-browser test: a subscriber sometimes never starts on a
# simulcast layer (a known server stall, tracked with simulcast work in issue 4). A second
# failure fails the suite; a retry that passes is printed, so it is never silent.
if ! (cd clients/web && node --test test/browser.test.mjs); then
    echo "RETRY: browser tests failed once; running them again (known simulcast start stall)"
    (cd clients/web && node --test test/browser.test.mjs)
fi
echo "browser test results (screenshot, logs): $PRISM_TEST_RESULTS"
