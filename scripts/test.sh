#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real cmld + control, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ "$(id -u)" = 0 ] || { echo "test.sh: the integration tests run cmld as root; run as root" >&2; exit 1; }
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The VM lab's device-mode cmld (tests/vm.rs): built first and copied aside, so the normal build
# below re-links target/release/cmld without the feature (the dependencies are shared).
cargo build --release --locked --features device-mode --bin cmld
mkdir -p target/vm
cp "${CARGO_TARGET_DIR:-target}/release/cmld" target/vm/cmld-device-mode.tmp
mv target/vm/cmld-device-mode.tmp target/vm/cmld-device-mode
cargo build --release --locked --bins
cargo test --locked --all-targets
