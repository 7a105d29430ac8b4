#!/usr/bin/env bash
# The VM lab's systemd host, once: an ext4 disk image of a Debian 12 root filesystem that boots
# with systemd as pid 1, for the `install` scenario (cml's Debian package installed, run and
# removed as a user would). Made with mmdebstrap --variant=minbase from this machine's apt sources:
#   systemd, systemd-sysv, dbus, iproute2, procps, apt, and what cml's package depends on and
#   recommends (so that `apt install ./cml_*.deb` resolves offline in the VM): e2fsprogs,
#   squashfs-tools, nftables, util-linux, kmod, libssl3, libgcc-s1
#   no documentation, man pages or translations (dpkg path-exclude, kept for later installs)
#   the kernel's modules cml and systemd load at run time (block, file systems, crypto, netfilter,
#   veth/dummy/tun, virtio), `depmod`ed, so that modprobe and the kernel's autoloading work
#   a fixed machine id (no first boot), volatile journal, hostname `vmlab`; masked: gettys,
#   timers, timesyncd, firstboot and what else only costs boot time under TCG
#   vmlab.service (enabled, after multi-user.target): runs /vmlab/host-stage2.sh, which the lab
#   copies in per run (scripts/vm/host-init), so the image holds no scenario
# Usage: scripts/vm/systemd-host.sh KERNEL_DIR [DIR]
#   KERNEL_DIR  scripts/vm/kernel.sh's directory (root/lib/modules/KVER, kver)
#   DIR         defaults to target/vm/systemd-host; the image is DIR/rootfs.img (prints its path)
# Cached: a finished DIR has DIR/.complete holding this script's hash and the kernel version, and
# is reused; parallel callers wait on DIR.lock. Runs boot a copy-on-write overlay of the image
# (qemu-img -b), so the cached image stays as built.
set -euo pipefail
kdir=${1:?usage: $0 KERNEL_DIR [DIR]}
dir=${2:-"$(dirname "$0")/../../target/vm/systemd-host"}
mkdir -p "$(dirname "$dir")"
dir=$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")
kver=$(cat "$kdir/kver")
kmods=$kdir/root/lib/modules/$kver
exec 9>"$dir.lock"
flock 9
stamp="$(sha256sum "$0" | cut -d' ' -f1) $kver"
if [ "$(cat "$dir/.complete" 2>/dev/null)" = "$stamp" ]; then
  echo "$dir/rootfs.img"
  exit 0
fi
for tool in mmdebstrap mkfs.ext4 depmod; do
  command -v "$tool" >/dev/null || { echo "vm/systemd-host: $tool is missing: run scripts/setup.sh" >&2; exit 2; }
done
start=$(date +%s)
rm -rf "$dir"
mkdir -p "$dir"
r=$dir/rootfs

packages=systemd,systemd-sysv,dbus,iproute2,procps,apt
packages+=,e2fsprogs,squashfs-tools,nftables,util-linux,kmod,libssl3,libgcc-s1
mmdebstrap --quiet --variant=minbase --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  bookworm "$r" >&2

echo vmlab > "$r/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 vmlab\n' > "$r/etc/hosts"
# A machine id of its own: without one systemd treats the boot as the first (firstboot, presets).
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$r/etc/machine-id"
echo >> "$r/etc/machine-id"
: > "$r/etc/fstab"
mkdir -p "$r/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$r/etc/systemd/journald.conf.d/vmlab.conf"

# Units that cost boot time under TCG and mean nothing in a lab VM.
for u in getty.target getty@.service serial-getty@.service console-getty.service \
  systemd-timesyncd.service systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer \
  dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
  systemd-tmpfiles-clean.timer proc-sys-fs-binfmt_misc.automount systemd-binfmt.service \
  systemd-hwdb-update.service systemd-journal-catalog-update.service \
  systemd-update-utmp.service systemd-update-utmp-runlevel.service systemd-pstore.service \
  modprobe@drm.service modprobe@efi_pstore.service sys-kernel-debug.mount sys-kernel-tracing.mount; do
  ln -sfn /dev/null "$r/etc/systemd/system/$u"
done

# The lab's unit: the scenario runner the lab copies in per run. Ordered after multi-user.target,
# so cmld's package meets a booted system; its output goes to the console.
cat > "$r/etc/systemd/system/vmlab.service" <<'UNIT'
[Unit]
Description=VM lab scenario
After=multi-user.target
ConditionPathExists=/vmlab/host-stage2.sh

[Service]
Type=exec
ExecStart=/bin/bash /vmlab/host-stage2.sh
StandardInput=null
StandardOutput=journal+console
StandardError=inherit
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
ln -sfn ../vmlab.service "$r/etc/systemd/system/multi-user.target.wants/vmlab.service"

# The modules cml (loop, squashfs, overlay, ext4, veth, fscrypt's crypto, nftables) and systemd
# load, with the kernel's module indexes rebuilt for this subset.
m=$r/usr/lib/modules/$kver
mkdir -p "$m/kernel"
for sub in fs/squashfs fs/overlayfs fs/ext4 fs/jbd2 fs/mbcache.ko fs/fat fs/nls fs/autofs fs/fuse \
  fs/configfs drivers/block/loop.ko drivers/block/virtio_blk.ko drivers/virtio \
  drivers/net/veth.ko drivers/net/dummy.ko drivers/net/tun.ko drivers/net/virtio_net.ko \
  drivers/net/net_failover.ko net/core net/netfilter net/ipv4 net/ipv6 net/bridge net/llc \
  net/802 net/sched crypto lib arch/x86/crypto; do
  [ -e "$kmods/kernel/$sub" ] || continue
  mkdir -p "$m/kernel/$(dirname "$sub")"
  cp -a "$kmods/kernel/$sub" "$m/kernel/$sub"
done
cp "$kmods"/modules.order "$kmods"/modules.builtin "$kmods"/modules.builtin.modinfo "$m/"
depmod -b "$r" "$kver" >&2

size_mb=$(( $(du -sm "$r" | cut -f1) + 2048 ))
mkfs.ext4 -q -F -L vmlab-root -d "$r" "$dir/rootfs.img" "${size_mb}M" >&2
du -sm "$r" | cut -f1 > "$dir/rootfs.mb"
rm -rf "$r"
echo "$stamp" > "$dir/.complete"
echo "vm/systemd-host: built $dir/rootfs.img ($(cat "$dir/rootfs.mb") MiB of files) in $(( $(date +%s) - start )) s" >&2
echo "$dir/rootfs.img"
