#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real cmld + control, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ "$(id -u)" = 0 ] || { echo "test.sh: the integration tests run cmld as root; run as root" >&2; exit 1; }
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo build --release --locked --bins
cargo test --locked --all-targets
