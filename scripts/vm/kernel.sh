#!/usr/bin/env bash
# Fetches Debian's kernel package (the one `linux-image-amd64` depends on) with apt, unpacks it and
# indexes its modules (depmod), once:
#   DIR/root/boot/vmlinuz-KVER, DIR/root/lib/modules/KVER/…   DIR/kver holds KVER
# Usage: scripts/vm/kernel.sh [DIR]   (DIR defaults to target/vm/kernel); prints DIR.
# Cached: a finished DIR has DIR/.complete holding this script's hash and the package name, and is
# reused (a changed script or a newer kernel in apt's lists fetches again); parallel callers wait on
# DIR.lock.
set -euo pipefail
dir=${1:-"$(dirname "$0")/../../target/vm/kernel"}
mkdir -p "$(dirname "$dir")"
dir=$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")
exec 9>"$dir.lock"
flock 9

# The versioned package behind the meta-package, e.g. linux-image-6.1.0-57-amd64.
package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1
}
pkg=$(package)
if [ -z "$pkg" ]; then
  apt-get update -qq >&2
  pkg=$(package)
fi
[ -n "$pkg" ] || { echo "vm/kernel: apt knows no linux-image-amd64" >&2; exit 1; }
stamp="$(sha256sum "$0" | cut -d' ' -f1) $pkg"
if [ "$(cat "$dir/.complete" 2>/dev/null)" = "$stamp" ]; then
  echo "$dir"
  exit 0
fi
start=$(date +%s)
rm -rf "$dir"
mkdir -p "$dir/deb"
# apt-get download writes into the current directory.
if ! (cd "$dir/deb" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2); then
  apt-get update -qq >&2
  (cd "$dir/deb" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2)
fi
dpkg-deb -x "$dir"/deb/*.deb "$dir/root"
kver=${pkg#linux-image-}
[ -f "$dir/root/boot/vmlinuz-$kver" ] || { echo "vm/kernel: $pkg has no boot/vmlinuz-$kver" >&2; exit 1; }
depmod -b "$dir/root" "$kver"
rm -rf "$dir/deb"
echo "$kver" > "$dir/kver"
echo "$stamp" > "$dir/.complete"
echo "vm/kernel: $pkg fetched into $dir in $(( $(date +%s) - start )) s" >&2
echo "$dir"
