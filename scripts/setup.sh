#!/usr/bin/env bash
# Installs the Debian packages cml needs to build, test and run its demo. Idempotent: apt runs only
# when something is missing. Must run as root (as the daemon does).
set -euo pipefail

PACKAGES=(
  pkg-config libssl-dev   # openssl crate
  gcc                     # -sys crates
  python3                 # test helpers
  busybox-static          # the demo and test GuestOS
  squashfs-tools          # cml-guestos: mksquashfs
  e2fsprogs               # mkfs.ext4
  iproute2                # tests/netlink.rs: `ip route` in a test netns
  nftables                # nft: device.conf nat_uplink (masquerading)
  mmdebstrap              # tests: the Debian 12 systemd GuestOS (scripts/debian-fixture.sh)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "setup: cargo (Rust toolchain) is required" >&2; exit 1; }
