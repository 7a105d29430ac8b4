#!/usr/bin/env bash
# The VM lab: boots Debian's own kernel in qemu with pure cgroup v2 and runs a scenario on a real
# cmld inside (scripts/vm/README.md tells what each scenario checks).
#
# Usage: scripts/vm-lab.sh SCENARIO [options]
#   SCENARIO          hosted   cmld in hosted mode on a tmpfs data dir: lifecycle, limits, devices,
#                              user namespace, network, adoption, isolation, cgroup v2, timings
#                     device   cmld built with `device-mode` runs from the initramfs (no
#                              switch_root), hostedmode: false, its data dir on a virtio disk:
#                              containers enter their root by a move + chroot, stay inside it;
#                              `control reboot` must stop the guests gracefully and reboot the
#                              VM; the host then reads the disk
#                     debian   the Debian 12 GuestOS with systemd (scripts/debian-fixture.sh, its
#                              store on a read-only virtio disk) boots in its delegated cgroup
#                     install  a Debian 12 host with systemd as pid 1 (scripts/vm/systemd-host.sh):
#                              cml's package installed, its service used, restarted, upgraded,
#                              stopped, removed and purged
#   --deb FILE        install: the package installed first (default: scripts/package.sh --revision 1)
#   --deb-new FILE    install: the upgrade, a higher version (default: scripts/package.sh --revision 2)
#   --bin-dir DIR     cmld, control, cml-guestos (default: $CARGO_TARGET_DIR or target, /release)
#   --cmld FILE       the cmld to boot (default: BIN_DIR/cmld; for `device`
#                     target/vm/cmld-device-mode, see scripts/test.sh)
#   --root KIND       hosted, device, debian: where the scenario runs — `initramfs` (the initial
#                     rootfs, as on a device; default for device) or `tmpfs` (after switch_root)
#   --timeout SECONDS for qemu (default 420; 900 for install)
#   --keep            keep the run directory (target/vm/runs/SCENARIO.*) also on success
# Environment: VMLAB_ACCEL=tcg|kvm skips the accelerator probe.
#
# Prints each result line (`VMLAB ok NAME`, `VMLAB FAIL NAME: why`, `VMLAB time …`); on any
# failure also the serial console (kernel, scenario output, cmld's log). Exit status: 0 every check
# passed; 1 a check failed; 2 usage or a missing tool; 3 the VM never reported (crash, timeout).
#
# Caches below target/vm/: the kernel (scripts/vm/kernel.sh), the accelerator probe's answer for
# this boot of the host and the install scenario's systemd host image (scripts/vm/systemd-host.sh,
# booted through a per-run overlay); everything else is made per run, so runs may go in parallel.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
vm=$root/target/vm

usage() { sed -n '5,31p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
scenario=${1:-}
case $scenario in hosted | device | debian | install) ;; *) usage ;; esac
shift
bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
cmld=
root_kind=
timeout_s=
keep=0
deb=
deb_new=
while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --cmld) cmld=$2; shift 2 ;;
    --root) root_kind=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --deb) deb=$2; shift 2 ;;
    --deb-new) deb_new=$2; shift 2 ;;
    *) usage ;;
  esac
done
if [ -z "$timeout_s" ]; then
  if [ "$scenario" = install ]; then timeout_s=900; else timeout_s=420; fi
fi
if [ -z "$root_kind" ]; then
  if [ "$scenario" = device ]; then root_kind=initramfs; else root_kind=tmpfs; fi
fi
case $root_kind in initramfs | tmpfs) ;; *) usage ;; esac
[ "$scenario" != install ] || [ "$root_kind" = tmpfs ] || usage
if [ -z "$cmld" ]; then
  if [ "$scenario" = device ]; then cmld=$vm/cmld-device-mode; else cmld=$bin_dir/cmld; fi
fi

die() { echo "vm-lab: $*" >&2; exit 2; }
for tool in qemu-system-x86_64 strip ldd depmod modprobe mkfs.ext4 e2fsck debugfs timeout flock; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh"
done
busybox=/bin/busybox
"$busybox" --list 2>/dev/null | grep -x switch_root >/dev/null || die "$busybox is not busybox-static (scripts/setup.sh)"
ldd "$busybox" >/dev/null 2>&1 && die "$busybox is dynamically linked: install busybox-static"
if [ "$scenario" = install ]; then
  # The package holds cmld and control; the host only builds and signs the GuestOS.
  [ -x "$bin_dir/cml-guestos" ] || die "$bin_dir/cml-guestos is missing (cargo build --release --bins)"
  for tool in qemu-img mmdebstrap dpkg-deb; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh"
  done
else
  for f in "$cmld" "$bin_dir/cmld" "$bin_dir/control" "$bin_dir/cml-guestos"; do
    [ -x "$f" ] || die "$f is missing (cargo build --release --bins; for device: scripts/test.sh)"
  done
fi
[ "$(id -u)" = 0 ] || die "run as root (the GuestOS build and the disk checks need it)"

t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# 1. The kernel, and which accelerator boots it.
kdir=$("$here/vm/kernel.sh" "$vm/kernel")
kver=$(cat "$kdir/kver")
kroot=$kdir/root
accel=${VMLAB_ACCEL:-$("$here/vm/accel.sh" "$vm" "$kroot/boot/vmlinuz-$kver")}

# Copies MODULE… and what they depend on from the kernel package into the initramfs stage $st,
# listed in $st/vmlab/modules in the order `modprobe --show-depends` gives (each once), for /init
# to insmod.
stage_modules() {
  : > "$st/vmlab/modules"
  local m kind path args rel
  for m in "$@"; do
    modprobe -d "$kroot" -S "$kver" --show-depends "$m" | while read -r kind path args; do
      [ "$kind" = insmod ] || continue
      rel=${path#"$kroot"/}
      grep -q "^$rel\( \|$\)" "$st/vmlab/modules" && continue
      mkdir -p "$st/$(dirname "$rel")"
      cp "$path" "$st/$rel"
      echo "$rel${args:+ $args}" >> "$st/vmlab/modules"
    done
  done
}

mkdir -p "$vm/runs"
# Failed runs are kept for a look; those of earlier days go.
find "$vm/runs" -mindepth 1 -maxdepth 1 -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
w=$(mktemp -d "$vm/runs/$scenario.XXXXXX")
cleanup() {
  local rc=$?
  if [ "$keep" = 1 ]; then
    echo "vm-lab: run directory kept: $w" >&2
  elif [ "$rc" = 0 ]; then
    rm -rf "$w"
  else
    rm -rf "$w/initramfs.cpio" "$w/disk-check/disk.img" "$w/root.qcow2" "$w/deb"
    echo "vm-lab: logs kept in $w" >&2
  fi
}
trap cleanup EXIT

# 2. The test GuestOSes: busybox roots signed with a development PKI (as tests/common/fixture.rs
#    builds them, with cml-guestos), laid out as a file:// store the VM sees at /vmlab/store.
st=$w/stage
mkdir -p "$st/vmlab/store"
"$here/vm/guestos.sh" "$bin_dir/cml-guestos" "$busybox" "$w/guestos" "$st/vmlab" "$scenario"

if [ "$scenario" = install ]; then
  # 3'. The systemd host: the cached Debian 12 image (scripts/vm/systemd-host.sh) under a
  #     copy-on-write overlay of this run, and an initramfs with busybox, the disk's modules, its
  #     /init (scripts/vm/host-init) and /vmlab: the runner, lib.sh, the scenario, the GuestOS
  #     store and PKI, the two packages.
  image=$("$here/vm/systemd-host.sh" "$kdir" "$vm/systemd-host")
  if [ -z "$deb" ] || [ -z "$deb_new" ]; then
    [ -x "$root/scripts/package.sh" ] || die "scripts/package.sh is missing: give --deb and --deb-new"
  fi
  # Each copied under package.sh's lock: cargo-deb empties target/debian when it makes the next one.
  mkdir -p "$w/deb"
  if [ -z "$deb" ]; then
    deb=$("$root/scripts/package.sh" --revision 1 --out "$w/deb" | tail -n1)
  fi
  if [ -z "$deb_new" ]; then
    deb_new=$("$root/scripts/package.sh" --revision 2 --out "$w/deb" | tail -n1)
  fi
  for d in "$deb" "$deb_new"; do
    if [ ! -f "$d" ] || ! dpkg-deb -f "$d" Package | grep -qx cml; then die "$d is not a cml package"; fi
  done
  v_old=$(dpkg-deb -f "$deb" Version)
  v_new=$(dpkg-deb -f "$deb_new" Version)
  dpkg --compare-versions "$v_new" gt "$v_old" || die "--deb-new ($v_new) is not newer than --deb ($v_old)"
  mkdir -p "$st/bin" "$st/vmlab/bin" "$st/vmlab/deb/old" "$st/vmlab/deb/new"
  cp "$busybox" "$st/bin/busybox"
  for a in sh mount mkdir insmod sleep cp rm poweroff switch_root cut; do ln -s busybox "$st/bin/$a"; done
  cp "$deb" "$st/vmlab/deb/old/"
  cp "$deb_new" "$st/vmlab/deb/new/"
  ln -s /bin/date "$st/vmlab/bin/date"
  stage_modules virtio_pci virtio_blk ext4
  cp "$here/vm/host-init" "$st/init"
  cp "$here/vm/host-stage2.sh" "$here/vm/lib.sh" "$st/vmlab/"
  cp "$here/vm/$scenario.sh" "$st/vmlab/scenario.sh"
  chmod +x "$st/init" "$st/vmlab/host-stage2.sh"
  (cd "$st" && find . | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) > "$w/initramfs.cpio"
  rm -rf "$st"
  qemu-img create -q -f qcow2 -F raw -b "$image" "$w/root.qcow2"
  prep_s=$(elapsed)
else
  # 3. The initramfs: busybox, cmld and control (stripped) with their libraries, mke2fs (ext4
  #    volumes), a nanosecond date (busybox's has no %N), the modules, the scenario.
  mkdir -p "$st/usr/bin" "$st/usr/sbin" "$st/usr/lib" "$st/usr/lib64" "$st/etc" "$st/vmlab/bin"
  ln -s usr/bin "$st/bin"; ln -s usr/sbin "$st/sbin"; ln -s usr/lib "$st/lib"; ln -s usr/lib64 "$st/lib64"
  cp "$busybox" "$st/usr/bin/busybox"
  for a in $("$busybox" --list); do
    [ -e "$st/usr/bin/$a" ] || ln -s busybox "$st/usr/bin/$a"
  done
  strip -o "$st/usr/bin/cmld" "$cmld"
  strip -o "$st/usr/bin/control" "$bin_dir/control"
  # The device scenario also runs a hosted cmld there (the initial rootfs: it must warn, then work).
  [ "$scenario" != device ] || strip -o "$st/usr/bin/cmld-hosted" "$bin_dir/cmld"
  cp /usr/sbin/mke2fs "$st/usr/sbin/mke2fs"
  ln -sf mke2fs "$st/usr/sbin/mkfs.ext4"
  cp /etc/mke2fs.conf "$st/etc/"
  cp /usr/bin/date "$st/vmlab/bin/date"
  for elf in "$st/usr/bin/cmld" "$st/usr/bin/control" "$st/usr/sbin/mke2fs" "$st/vmlab/bin/date"; do
    for lib in $(ldd "$elf" | grep -o '/[^ ]*'); do
      [ -e "$st$lib" ] || { mkdir -p "$(dirname "$st$lib")" && cp -L "$lib" "$st$lib"; }
    done
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$st/etc/passwd"
  printf 'root:x:0:\n' > "$st/etc/group"
  # fscrypt (SOFT-token volumes) asks for xts(aes), cts(cbc(aes)) and hmac(sha512): preloaded, since
  # the kernel's request_module finds no modprobe database in the VM.
  mods=(loop squashfs overlay ext4 veth dummy tun xts cts ecb sha512_generic)
  [ "$scenario" = hosted ] || mods+=(virtio_pci virtio_blk)
  stage_modules "${mods[@]}"
  cp "$here/vm/init" "$st/init"
  cp "$here/vm/stage2.sh" "$here/vm/lib.sh" "$st/vmlab/"
  cp "$here/vm/$scenario.sh" "$st/vmlab/scenario.sh"
  echo "$root/target/fixtures/debian-12/store" > "$st/vmlab/debian-store"
  chmod +x "$st/init" "$st/vmlab/stage2.sh"
  # Uncompressed: the guest's gzip under TCG costs more than qemu copying a few more MiB.
  (cd "$st" && find . | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) > "$w/initramfs.cpio"
  rm -rf "$st"
  prep_s=$(elapsed)

  # 4. The device scenario's disk: cmld's data dir, ext4 on a virtio disk. The debian scenario's: the
  #    fixture's store, read-only, mounted in the VM where its update_base_url points.
  drive=()
  if [ "$scenario" = debian ]; then
    fixture=$root/target/fixtures/debian-12
    "$here/debian-fixture.sh" "$bin_dir/cml-guestos" "$fixture"
    # Also the same root as an ext4 image (`ext4/`): Linux 6.1 cannot idmap squashfs, so the
    # user-namespace guest boots from this one.
    cp -a "$fixture/store" "$w/disk"
    "$bin_dir/cml-guestos" build --rootfs "$fixture/rootfs" --name debext4 --version 12 --out "$w/disk/ext4" \
      --root-type shared_rw --root-fs ext4 --data-fs ext4 --data-size 64 --notify --stop-signal SIGRTMIN+3 \
      --update-base-url "file://$fixture/store/ext4" > /dev/null
    mkfs.ext4 -q -F -L debian-store -d "$w/disk" "$w/store.img" "$(( $(du -sm "$w/disk" | cut -f1) + 64 ))M"
    rm -rf "$w/disk"
    drive=(-drive "file=$w/store.img,format=raw,if=virtio,readonly=on")
  fi
  if [ "$scenario" = device ]; then
    truncate -s 512M "$w/disk.img"
    mkfs.ext4 -q -F -L cml-data "$w/disk.img"
    drive=(-drive "file=$w/disk.img,format=raw,if=virtio,cache=unsafe")
  fi
fi

# 5. Boot. Console (kernel, scenario output) on the first serial port, results on the second.
accel_args=(-accel tcg)
[ "$accel" = kvm ] && accel_args=(-enable-kvm -cpu max)
echo "vm-lab: $scenario: kernel $kver, accel $accel, initramfs $(( $(stat -c %s "$w/initramfs.cpio") / 1048576 )) MiB, prepared in ${prep_s} s" >&2
set +e
mem=2048
append="console=ttyS0 quiet panic=-1 cgroup_no_v1=all vmlab.scenario=$scenario"
# As a device's cmld does, the scenario runs from the initramfs: /init starts it without switch_root.
[ "$root_kind" != initramfs ] || append+=" vmlab.root=initramfs"
if [ "$scenario" = install ]; then
  # systemd on pure cgroup v2, its status lines off; the rest of the quiet boot is in the image.
  mem=2560
  drive=(-drive "file=$w/root.qcow2,format=qcow2,if=virtio,cache=unsafe")
  append+=" systemd.unified_cgroup_hierarchy=1 systemd.show_status=0 loglevel=4"
fi
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -nodefaults -no-user-config -display none \
  "${accel_args[@]}" -m "$mem" -smp 2 -no-reboot \
  -serial "file:$w/console.log" -serial "file:$w/results.log" \
  -kernel "$kroot/boot/vmlinuz-$kver" -initrd "$w/initramfs.cpio" "${drive[@]}" \
  -append "$append" </dev/null >"$w/qemu.log" 2>&1
qemu_rc=$?
set -e
boot_s=$(elapsed)
tr -d '\r' < "$w/results.log" > "$w/results"
grep '^VMLAB ' "$w/results" || true

failed=0
verdict() { echo "VMLAB $*"; case $1 in FAIL) failed=$((failed + 1)) ;; esac; }
done_line=$(grep '^VMLAB DONE ' "$w/results" | tail -n1 || true)
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  verdict FAIL "vm: qemu timed out after ${timeout_s} s"
elif [ "$qemu_rc" != 0 ]; then
  verdict FAIL "vm: qemu exited with status $qemu_rc: $(tail -n3 "$w/qemu.log" | tr '\n' ' ')"
fi
[ -n "$done_line" ] || verdict FAIL "vm: the VM never reported DONE"
in_vm_failed=$(grep -c '^VMLAB FAIL ' "$w/results" || true)
failed=$((failed + in_vm_failed))

# 6. The device scenario ends with a reboot: the kernel says so, then the host reads the disk.
if [ "$scenario" = device ]; then
  tr -d '\r' < "$w/console.log" > "$w/console"
  if ! grep -q '^VMLAB info reboot_requested' "$w/results"; then
    verdict FAIL "host:reboot-restarting: not run: the scenario stopped before \`control reboot\`"
  elif grep -q 'reboot: Restarting system' "$w/console"; then
    verdict ok "host:reboot-restarting"
  elif grep -q 'reboot: Power down' "$w/console"; then
    verdict FAIL "host:reboot-restarting: the VM powered off instead of rebooting"
  elif grep -q 'Kernel panic' "$w/console"; then
    verdict FAIL "host:reboot-restarting: kernel panic"
  else
    verdict FAIL "host:reboot-restarting: no 'reboot: Restarting system' on the console"
  fi
  uuid=$(sed -n 's/^VMLAB info persist_uuid=\([0-9a-f-]*\)$/\1/p' "$w/results" | tail -n1)
  "$here/vm/disk-check.sh" "$w/disk.img" "$uuid" "$w/disk-check" > "$w/disk-results"
  grep '^VMLAB ' "$w/disk-results"
  grep -q '^VMLAB ok ' "$w/disk-results" || verdict FAIL "host:disk: no check ran"
  failed=$((failed + $(grep -c '^VMLAB FAIL ' "$w/disk-results" || true)))
fi

total_s=$(elapsed)
echo "VMLAB cost scenario=$scenario accel=$accel prepare_s=$prep_s vm_s=$(awk -v a="$boot_s" -v b="$prep_s" 'BEGIN { printf "%.1f", a - b }') total_s=$total_s kernel_boot_s=$(sed -n 's/^VMLAB info booted_s=//p' "$w/results" | head -n1)"
if [ "$failed" != 0 ] || [ -z "$done_line" ]; then
  {
    echo "===== vm-lab: serial console of the $scenario VM ====="
    tr -d '\r' < "$w/console.log"
    echo "===== vm-lab: end of the serial console ====="
    if [ -s "$w/qemu.log" ]; then echo "===== qemu ====="; cat "$w/qemu.log"; fi
    if [ -s "$w/disk-results" ]; then echo "===== the host's disk check ====="; cat "$w/disk-results"; fi
  } >&2
  echo "vm-lab: $scenario: $failed check(s) failed" >&2
  [ -n "$done_line" ] || exit 3
  exit 1
fi
echo "vm-lab: $scenario: all checks passed in ${total_s} s" >&2
