#!/usr/bin/env bash
# Builds cml's Debian package with cargo-deb (its metadata: [package.metadata.deb] in Cargo.toml):
#   1. the release binaries (`cargo build --release --locked --bins`: nothing to do when fresh);
#   2. their man pages and bash/zsh/fish completions, generated from each binary's own clap
#      definition (CML_GENERATE_ASSETS, src/cli_assets.rs) into <target>/release/assets;
#   3. `cargo deb --no-build`, which adds the systemd units, sysusers.d/tmpfiles.d entries and
#      maintainer scripts of config/.
# Usage: scripts/package.sh [--revision N] [--out DIR] [--lintian]
#   --revision N   the Debian revision (default 1): cml_<version>-N_amd64.deb; a higher N is a newer
#                  package (the upgrade test installs -2 over -1)
#   --out DIR      copy the package into DIR (under the lock: cargo-deb empties <target>/debian
#                  when it makes the next one, so parallel callers each take their own copy)
#   --lintian      also run lintian on it: no error or warning may remain (the tags the package
#                  overrides are explained in config/debian/lintian-overrides)
# Prints the path of the .deb (in <target>/debian/). Needs cargo-deb (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
revision=1
lint=0
out=
while [ $# -gt 0 ]; do
  case $1 in
    --revision) revision=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --lintian) lint=1; shift ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
export PATH=$HOME/.cargo/bin:$PATH
command -v cargo-deb >/dev/null || { echo "package.sh: cargo-deb is missing: run scripts/setup.sh" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-$PWD/target}
mkdir -p "$target"
# One at a time: the assets directory and target/debian are shared (tests build packages in parallel).
exec 9>"$target/package.lock"
flock 9
cargo build --release --locked --bins >&2
assets=$target/release/assets
rm -rf "$assets"
for bin in cmld control cml-guestos cml-web; do
  CML_GENERATE_ASSETS=$assets "$target/release/$bin"
done
gzip -9n "$assets"/man/*
# cargo-deb writes its own messages to stderr and the package's path last on stdout.
deb=$(cargo deb --no-build --locked --strip --deb-revision "$revision" | tail -n1)
[ -f "$deb" ] || { echo "package.sh: cargo deb made no package ($deb)" >&2; exit 1; }
if [ -n "$out" ]; then
  mkdir -p "$out"
  cp "$deb" "$out/"
  deb=$(cd "$out" && pwd)/$(basename "$deb")
fi
if [ "$lint" = 1 ]; then
  lintian --fail-on error,warning --display-info "$deb" >&2
fi
echo "$deb"
