#!/usr/bin/env bash
# Which qemu accelerator boots Debian's kernel on this host: prints `kvm` or `tcg`.
# KVM is tried only when /dev/kvm exists, with a tiny initramfs and a short bound: under nested
# virtualization /dev/kvm can be there and `-enable-kvm` still hang (`-cpu host` even aborts), while
# TCG boots the kernel in a few seconds. The answer is cached per boot of the host
# (VM_DIR/accel.BOOT_ID); parallel callers wait on VM_DIR/accel.lock.
# Usage: scripts/vm/accel.sh VM_DIR VMLINUZ
set -euo pipefail
vm=${1:?usage: $0 VM_DIR VMLINUZ}
kernel=${2:?usage: $0 VM_DIR VMLINUZ}
mkdir -p "$vm"
exec 9>"$vm/accel.lock"
flock 9
cache=$vm/accel.$(cat /proc/sys/kernel/random/boot_id)
if [ -s "$cache" ]; then
  cat "$cache"
  exit 0
fi
answer=tcg
if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  p=$(mktemp -d "$vm/accel-probe.XXXXXX")
  mkdir -p "$p/root/bin" "$p/root/proc"
  cp /bin/busybox "$p/root/bin/busybox"
  printf '#!/bin/busybox sh\n/bin/busybox echo VMLAB-PROBE-OK\n/bin/busybox poweroff -f\n' > "$p/root/init"
  chmod +x "$p/root/init"
  (cd "$p/root" && find . | /bin/busybox cpio -o -H newc -R 0:0 2>/dev/null) > "$p/initramfs.cpio"
  # In a subshell: a qemu that aborts (as `-cpu max` does here) leaves no job message behind.
  (timeout --kill-after=2 10 qemu-system-x86_64 -nodefaults -no-user-config -display none \
    -enable-kvm -cpu max -m 256 -no-reboot -serial "file:$p/console" \
    -kernel "$kernel" -initrd "$p/initramfs.cpio" -append "console=ttyS0 quiet panic=-1" \
    </dev/null >/dev/null 2>&1) 2>/dev/null || true
  grep -q VMLAB-PROBE-OK "$p/console" 2>/dev/null && answer=kvm
  rm -rf "$p"
fi
rm -f "$vm"/accel.*-*-*
echo "$answer" > "$cache"
echo "vm/accel: $answer (KVM $([ "$answer" = kvm ] && echo boots || echo 'does not boot here'))" >&2
echo "$answer"
