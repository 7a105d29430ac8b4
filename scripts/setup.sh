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
  systemd-container       # cargo bench: systemd-nspawn, the peer of the Debian/systemd boot rows
  qemu-system-x86         # the VM lab (scripts/vm-lab.sh, tests/vm.rs): a pure cgroup-v2 kernel
  qemu-utils              # the VM lab's install scenario: qemu-img (an overlay of the systemd host's disk)
  kmod                    # the VM lab: depmod/modprobe resolve the kernel modules' order
  binutils                # the VM lab: strip (the binaries in its initramfs)
  curl openssl            # demo.sh: cml-web's first password, waiting for it to listen
  chromium chromium-driver # tests/browser.rs: the cml-web page in headless Chromium (WebDriver)
  systemd                 # tests/systemd.rs: systemd-socket-activate (socket activation of cmld)
  lintian                 # scripts/package.sh --lintian: the Debian package's checks
)
# build.rs runs `npm ci` for cml-web's pinned front-end libraries (src/web/ui/package-lock.json).
# Node from NodeSource ships npm inside its nodejs package; Debian splits them.
command -v npm >/dev/null || PACKAGES+=(nodejs npm)

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

# scripts/package.sh builds the Debian package with cargo-deb: pinned, compiled once (~40 s) into
# cargo's own bin directory, where `cargo deb` finds it.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qw "$CARGO_DEB_VERSION"; then
  echo "setup: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install --locked --quiet --version "$CARGO_DEB_VERSION" cargo-deb
fi
