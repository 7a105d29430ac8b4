# The device-mode scenario: cmld built with the `device-mode` feature runs straight from the
# initramfs, as on a device (no switch_root: its root is the initial rootfs, which pivot_root
# cannot move), `hostedmode: false` and signed configs (the shipped default), its data dir on the
# VM's virtio disk (ext4, made by the host). Containers enter their root by a move onto / and a
# chroot; a probe container checks they stay inside it and hold no host mount; a hosted cmld on
# the same root warns and works. A container whose init writes a stop marker on its persistent
# ext4 /data when it gets SIGTERM writes a file there; then `control reboot` must stop it
# gracefully, sync and reboot the machine. What happens after the reboot call the host checks: the
# kernel's "reboot: Restarting system" on the console (qemu runs with -no-reboot and exits), and
# the disk (scripts/vm/disk-check.sh).
. /vmlab/lib.sh
DISK=/mnt/disk
DATA=$DISK/cml
SOCK=/run/socket/cml-control
RUN=/run/cml
CMLD_LOG=$DISK/cmld.log   # on the disk, so the host can show it after the reboot
trap '[ "$(failures)" = 0 ] || dump_cmld_log' EXIT

c_disk() {
  mkdir -p "$DISK"
  wait_for 10 '[ -b /dev/vda ]' || die "no /dev/vda (virtio disk)"
  mount -t ext4 /dev/vda "$DISK"
  mkdir -p "$DATA"
  printf 'hostedmode: false\nsigned_configs: true\nstop_timeout: 10\n' > "$DATA/device.conf"
}

c_cmld_up() {
  start_cmld
  ctl_ok list
  grep 'cmld starting' "$CMLD_LOG" | grep -q 'hosted=false' ||
    die "cmld does not run in device mode: $(grep 'cmld starting' "$CMLD_LOG" | one_line)"
}

# Device mode defaults to `cgroup_favordynmods`: the cgroup2 mount is remounted with it, keeping
# its other options, and the log says so.
c_favordynmods() {
  opts=$(awk '$3 == "cgroup2" { print $4 }' /proc/mounts)
  echo "cgroup2 options: $opts"
  echo "$opts" | grep -q favordynmods || die "no favordynmods on the cgroup2 mount: $opts; log: $(grep -i favordynmods "$CMLD_LOG" | one_line)"
  echo "$opts" | grep -q nsdelegate || die "the remount lost nsdelegate: $opts"
  grep -q 'remounted the host.s cgroup2 mount with favordynmods' "$CMLD_LOG" || die "cmld did not log the remount"
}

c_guestos_push() {
  ctl_ok ca_register /vmlab/pki/root-ca.cert
  ctl_ok push_guestos_config /vmlab/store/keeper-1.conf /vmlab/store/keeper-1.conf.sig /vmlab/pki/signing.cert
}

c_unsigned_refused() {
  printf 'name: "unsigned"\nguest_os: "keeper"\ncolor: 1\ntoken_type: NONE\n' > /run/vmlab/unsigned.conf
  ! ctl create /run/vmlab/unsigned.conf > /dev/null 2>&1 || die "an unsigned container config was accepted"
}

# An ext4 file system the host mounts before a container starts and unmounts while it runs: its
# super block must go with the host's unmount — the container's mount namespace (a copy of the
# host's at its start) holds no host mount after the root switch.
c_pin_mount() {
  truncate -s 8M /run/vmlab/pin.img
  mkfs.ext4 -q -F /run/vmlab/pin.img
  mkdir -p /mnt/pin
  mount -o loop /run/vmlab/pin.img /mnt/pin
  dev=$(awk '$2 == "/mnt/pin" { print $1 }' /proc/mounts)
  [ -d "/sys/fs/ext4/${dev##*/}" ] || die "no /sys/fs/ext4/${dev##*/} for /mnt/pin ($dev)"
  echo "${dev##*/}" > /run/vmlab/pin.dev
  # A file on the VM's own root, which no container may reach.
  echo host-only > /vmlab-host-only
}

c_probe_start() {
  ctl_ok create /vmlab/probe.conf /vmlab/probe.conf.sig /vmlab/pki/signing.cert > /dev/null
  ctl_ok start probe
  expect_state probe RUNNING
  out=$(crun probe 'echo "hello from $(hostname)"')
  [ "$out" = "hello from probe" ] || die "control run: '$out'"
}

c_host_mount_released() {
  d=$(cat /run/vmlab/pin.dev)
  umount /mnt/pin
  wait_for 5 "[ ! -e /sys/fs/ext4/$d ]" ||
    die "the ext4 of /mnt/pin ($d) lives on after the host unmounted it: a container's namespace holds it"
}

# The listing after each `== NAME` line of /bin/escape-probe run in container $1 must be the
# container's root (it has /data) and not the VM's (/init, /vmlab, /vmlab-host-only).
probe_escape() {
  out=$(crun "$1" escape-probe) || die "escape-probe failed in $1: $(echo "$out" | one_line)"
  echo "$out"
  echo "$out" | grep -qx '== end' || die "escape-probe stopped early: $(echo "$out" | one_line)"
  for s in dotdot proc-1-root fd-outside-jail; do
    l=$(echo "$out" | awk -v s="== $s" '$0 == s { f = 1; next } /^== / { f = 0 } f')
    if ! echo "$l" | grep -qx data; then die "$s: not the container's root: $(echo "$l" | one_line)"; fi
    for h in init vmlab vmlab-host-only; do
      if echo "$l" | grep -qx "$h"; then die "$s reached the VM's root: $(echo "$l" | one_line)"; fi
    done
  done
}

c_iso_escape() { probe_escape probe; }

# What the container sees of mounts and processes: none of the VM's.
c_iso_host_unseen() {
  mi=$(crun probe 'cat /proc/self/mountinfo')
  echo "$mi"
  if echo "$mi" | awk '{ print $5 }' | grep -qE '^/(mnt|vmlab)'; then
    die "the VM's mounts are listed inside: $(echo "$mi" | one_line)"
  fi
  comms=$(crun probe 'cat /proc/[0-9]*/comm')
  if echo "$comms" | grep -qx cmld; then die "cmld is visible inside: $(echo "$comms" | one_line)"; fi
  if crun probe 'cat /vmlab-host-only' | grep -qx host-only; then die "the VM's /vmlab-host-only is readable inside"; fi
}

# The root switch keeps what pivot_root gives: the init has a mount namespace of its own, every
# mount in it is private (no `shared:` peer group), and it holds no descriptor of a directory or
# file of the host (only pipes, sockets, anonymous inodes and its own console).
c_ns_private_fds() {
  pid=$(init_pid probe)
  [ -n "$pid" ] || die "no init pid for probe"
  [ "$(readlink "/proc/$pid/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] || die "the init shares the VM's mount namespace"
  if grep 'shared:' "/proc/$pid/mountinfo"; then die "a shared mount in the container's namespace"; fi
  ls -l "/proc/$pid/fd/"
  for fd in /proc/$pid/fd/*; do
    t=$(readlink "$fd")
    case $t in
      pipe:* | socket:* | anon_inode:* | /dev/pts/* | /dev/console | /dev/null) ;;
      *) die "the init holds ${fd##*/} -> $t" ;;
    esac
  done
}

c_probe_stop_start() {
  pid=$(init_pid probe)
  ctl_ok stop probe
  expect_state probe STOPPED
  if kill -0 "$pid" 2> /dev/null; then die "the init ($pid) lives on after the stop"; fi
  ctl_ok start probe
  expect_state probe RUNNING
  [ "$(crun probe 'echo again')" = again ] || die "no output after the restart"
  ctl_ok stop probe
  expect_state probe STOPPED
}

# A hosted cmld (the default build) on the same root: on the initial rootfs it warns in its log;
# its containers start, stay inside their root and stop.
c_hosted_fallback() {
  DATA=/run/hosted/data SOCK=/run/hosted/sock RUN=/run/hosted/run CMLD=cmld-hosted
  CMLD_LOG=/run/vmlab/cmld-hosted.log CMLD_PIDFILE=/run/vmlab/cmld-hosted.pid
  mkdir -p "$DATA"
  printf 'hostedmode: true\nsigned_configs: false\n' > "$DATA/device.conf"
  # Shown after a failure (set -e holds in the trap too).
  trap 'kill -TERM "$(cmld_pid)" 2> /dev/null || true; echo "== hosted cmld log"; cat "$CMLD_LOG"' EXIT
  start_cmld --cgroup-parent cmlhosted --ifname-prefix cmh
  grep 'cmld starting' "$CMLD_LOG" | grep -q 'hosted=true' || die "not hosted: $(grep 'cmld starting' "$CMLD_LOG" | one_line)"
  check_root_switch
  ctl_ok ca_register /vmlab/pki/root-ca.cert
  ctl_ok push_guestos_config /vmlab/store/keeper-1.conf /vmlab/store/keeper-1.conf.sig /vmlab/pki/signing.cert
  create hprobe keeper 'netns: false\n'
  ctl_ok start hprobe
  expect_state hprobe RUNNING
  probe_escape hprobe
  ctl_ok stop hprobe
  expect_state hprobe STOPPED
  kill -TERM "$(cmld_pid)"
  wait_for 30 "! kill -0 $(cmld_pid)" || die "the hosted cmld did not exit on SIGTERM"
}

c_create_start() {
  ctl_ok create /vmlab/keeper.conf /vmlab/keeper.conf.sig /vmlab/pki/signing.cert > /dev/null
  ctl_ok start keeper
  expect_state keeper RUNNING
  report "VMLAB info persist_uuid=$(uuid_of keeper)"
}

c_write_before_reboot() {
  crun keeper 'grep " /data " /proc/mounts' | grep -q ' ext4 ' ||
    die "/data is not ext4: $(crun keeper 'cat /proc/mounts' | one_line)"
  crun keeper 'echo written-before-reboot > /data/before-reboot && sync && cat /data/before-reboot' |
    grep -qx written-before-reboot || die "cannot write /data/before-reboot"
}

require disk c_disk
require cmld-up c_cmld_up
check root-switch check_root_switch
check favordynmods c_favordynmods
require guestos-push c_guestos_push
check unsigned-config-refused c_unsigned_refused
require pin-mount c_pin_mount
require probe-start c_probe_start
check host-mount-released c_host_mount_released
check iso-escape c_iso_escape
check iso-host-unseen c_iso_host_unseen
check ns-private-fds c_ns_private_fds
check probe-stop-start c_probe_stop_start
# What the root switch costs: the same timing as the hosted scenario's (`--root tmpfs` for pivot_root).
check timing time_start_stop probe
[ -s /run/vmlab/times ] && report "VMLAB time root=$(vm_root) start_ms=$(cut -d' ' -f1 /run/vmlab/times) stop_ms=$(cut -d' ' -f2 /run/vmlab/times)"
check hosted-fallback c_hosted_fallback
require create-start c_create_start
require write-before-reboot c_write_before_reboot

# Everything the VM can tell is told: the rest is the reboot itself, checked by the host.
report_done
report "VMLAB info reboot_requested_at_s=$(uptime_s)"
out=$(ctl reboot 2>&1)
rc=$?
report "VMLAB FAIL reboot: control reboot returned ($rc) and the VM still runs: $(echo "$out" | one_line)"
