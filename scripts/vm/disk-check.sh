#!/usr/bin/env bash
# After the device scenario's reboot: reads the VM's disk image without mounting it. The VM was
# rebooted without unmounting it (reboot(2) after sync, as on a device), so the check works on a
# sparse copy whose journal e2fsck replays, as the next boot would; then debugfs reads cmld's data
# dir and, inside it, the container's persistent /data volume image.
# Usage: scripts/vm/disk-check.sh DISK_IMAGE CONTAINER_UUID WORK_DIR
# Prints `VMLAB ok|FAIL host:NAME…` lines; on a failure also cmld's log from the disk.
set -uo pipefail
disk=${1:?usage}
uuid=${2:-}
w=${3:?usage}
mkdir -p "$w"
failed=0
ok() { echo "VMLAB ok host:$1"; }
fail() { echo "VMLAB FAIL host:$1: $2"; failed=1; }
dcat() { debugfs -R "cat $2" "$1" 2>/dev/null; }

cp --sparse=always "$disk" "$w/disk.img"
e2fsck -fy "$w/disk.img" > "$w/fsck.log" 2>&1
rc=$?
if [ "$rc" -le 1 ]; then ok disk-fsck; else fail disk-fsck "e2fsck exited $rc: $(tail -n3 "$w/fsck.log" | tr '\n' ' ')"; fi

if [ -z "$uuid" ]; then
  fail stop-marker "the VM reported no container UUID"
else
  debugfs -R "dump /cml/containers/$uuid/data.img $w/data.img" "$w/disk.img" > "$w/dump.log" 2>&1
  if [ ! -s "$w/data.img" ]; then
    fail stop-marker "no /cml/containers/$uuid/data.img on the disk: $(debugfs -R "ls -l /cml/containers/$uuid" "$w/disk.img" 2>&1 | tr '\n' ' ' | cut -c1-300)"
  else
    if e2fsck -fn "$w/data.img" > "$w/data-fsck.log" 2>&1; then
      ok data-volume-clean
    else
      fail data-volume-clean "the container's /data image is not clean: $(tail -n3 "$w/data-fsck.log" | tr '\n' ' ')"
    fi
    marker=$(dcat "$w/data.img" /stop-marker)
    case $marker in
      "stopped by SIGTERM"*) ok stop-marker ;;
      *) fail stop-marker "no stop marker on the container's /data (${marker:-missing}): its init got no SIGTERM before the reboot" ;;
    esac
    before=$(dcat "$w/data.img" /before-reboot)
    if [ "$before" = written-before-reboot ]; then ok file-before-reboot; else fail file-before-reboot "/data/before-reboot: '${before:-missing}'"; fi
  fi
fi
if [ "$failed" != 0 ]; then
  echo "===== cmld log from the disk ====="
  dcat "$w/disk.img" /cmld.log
  echo "===== end of the cmld log ====="
fi
exit 0
