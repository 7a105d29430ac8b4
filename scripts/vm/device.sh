# The device-mode scenario: cmld built with the `device-mode` feature, `hostedmode: false` and
# signed configs (the shipped default), its data dir on the VM's virtio disk (ext4, made by the
# host). A container whose init writes a stop marker on its persistent ext4 /data when it gets
# SIGTERM writes a file there; then `control reboot` must stop it gracefully, sync and reboot the
# machine. What happens after the reboot call the host checks: the kernel's "reboot: Restarting
# system" on the console (qemu runs with -no-reboot and exits), and the disk (scripts/vm/disk-check.sh).
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
check favordynmods c_favordynmods
require guestos-push c_guestos_push
check unsigned-config-refused c_unsigned_refused
require create-start c_create_start
require write-before-reboot c_write_before_reboot

# Everything the VM can tell is told: the rest is the reboot itself, checked by the host.
report_done
report "VMLAB info reboot_requested_at_s=$(uptime_s)"
out=$(ctl reboot 2>&1)
rc=$?
report "VMLAB FAIL reboot: control reboot returned ($rc) and the VM still runs: $(echo "$out" | one_line)"
