#!/bin/bash
# The VM lab's scenario runner on the systemd host (vmlab.service, scripts/vm/systemd-host.sh):
# waits until the boot is finished, says how long it took (`VMLAB time boot_*`), runs
# /vmlab/scenario.sh, whose result lines (lib.sh) go to the second serial port, then reports
# `VMLAB DONE <failed>` and powers the VM off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /run/vmlab
export VMLAB_RESULTS=/run/vmlab/results
: > "$VMLAB_RESULTS"
state=$(timeout 300 systemctl is-system-running --wait 2>&1)
echo "vmlab: systemd says '$state' at $(cut -d' ' -f1 /proc/uptime) s; cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
if [ "$state" != running ]; then
  echo "vmlab: failed units:"; systemctl --failed --no-legend --plain
fi
echo "VMLAB time boot_s=$(cut -d' ' -f1 /proc/uptime) system_state=$state" > /dev/ttyS1
# "Startup finished in 3.1s (kernel) + 20.5s (userspace) = 23.6s"
echo "VMLAB info systemd: $(systemd-analyze time 2>/dev/null | head -n1)" > /dev/ttyS1
systemd-analyze time 2>/dev/null | head -n1
bash /vmlab/scenario.sh
rc=$?
. /vmlab/lib.sh
report_done "$rc"
sync
systemctl --force poweroff
