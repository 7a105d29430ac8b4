#!/bin/sh
# The VM lab's init, stage 2 (pid 1, in the tmpfs root or on the initial rootfs): the mounts a host
# has — only cgroup2 at /sys/fs/cgroup (nsdelegate), devpts, /run, /tmp, /dev/shm — then
# /vmlab/scenario.sh, whose result
# lines (lib.sh) go to the second serial port; then `VMLAB DONE <failed>` and power off. A scenario
# may end the VM itself (the device scenario reboots through cmld).
export PATH=/vmlab/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp
hostname vmlab
ip link set lo up
mkdir -p /run/vmlab
export VMLAB_RESULTS=/run/vmlab/results
: > "$VMLAB_RESULTS"
echo "vmlab: stage 2 at $(cut -d' ' -f1 /proc/uptime) s; cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
sh /vmlab/scenario.sh
rc=$?
. /vmlab/lib.sh
report_done "$rc"
sync
poweroff -f
