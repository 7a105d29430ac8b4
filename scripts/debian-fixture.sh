#!/usr/bin/env bash
# Builds the Debian 12 test GuestOS, once, from this machine's apt sources:
#   DIR/rootfs/       mmdebstrap --variant=minbase with systemd, dbus, iproute2, procps
#   DIR/store/        debian-12.conf + operatingsystems/x86/debian-12/root.img (unsigned; tests run
#                     cmld with signed_configs: false), SHARED_RW squashfs root, ext4 /data,
#                     READY=1 notification, stop signal SIGRTMIN+3
# Usage: scripts/debian-fixture.sh CML_GUESTOS [DIR]   (DIR defaults to target/fixtures/debian-12)
# Cached: a finished DIR has DIR/.complete holding this script's hash and is reused (a changed
# script rebuilds it); parallel callers wait on DIR.lock.
set -euo pipefail
guestos_tool=${1:?usage: $0 CML_GUESTOS [DIR]}
dir=${2:-"$(dirname "$0")/../target/fixtures/debian-12"}
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
stamp=$(sha256sum "$0" | cut -d' ' -f1)
if [ "$(cat "$dir/.complete" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"
start=$(date +%s)
# mmdebstrap copies the build host's /etc/hostname; the guest gets its own.
mmdebstrap --quiet --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2,procps \
  --customize-hook='echo debian > "$1/etc/hostname"' bookworm "$dir/rootfs" >&2
"$guestos_tool" build --rootfs "$dir/rootfs" --name debian --version 12 --out "$dir/store" \
  --root-type shared_rw --data-fs ext4 --data-size 64 --notify --stop-signal SIGRTMIN+3 \
  --update-base-url "file://$(cd "$dir" && pwd)/store" >&2
echo "$stamp" > "$dir/.complete"
echo "debian-fixture: built $dir in $(( $(date +%s) - start )) s" >&2
