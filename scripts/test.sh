#!/usr/bin/env bash
# The whole Prism test suite, exactly as CI runs it (.ci/run calls this). Works on a fresh Debian
# machine with the Rust toolchain: it installs anything else it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked
