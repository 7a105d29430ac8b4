# The systemd-guest scenario: the Debian 12 GuestOS of the real-guests tests (systemd as its init,
# scripts/debian-fixture.sh) boots on a pure cgroup-v2 host, in the cgroup subtree cml delegates
# to it. The host passes the fixture's store as a read-only virtio disk, mounted where the
# GuestOS config's update_base_url points (the host path: /vmlab/debian-store names it); `ext4/`
# there holds the same root as an ext4 image (GuestOS `debext4`).
. /vmlab/lib.sh
DATA=/var/lib/cml-lab
SOCK=/run/vmlab/cml.sock
RUN=/run/cml-lab
PARENT=cml
STORE=$(cat /vmlab/debian-store)
mkdir -p "$DATA"
trap '[ "$(failures)" = 0 ] || dump_cmld_log' EXIT

c_store() {
  wait_for 10 '[ -b /dev/vda ]' || die "no /dev/vda (virtio disk with the Debian store)"
  mkdir -p "$STORE"
  mount -t ext4 -o ro /dev/vda "$STORE"
  [ -f "$STORE/debian-12.conf" ] || die "no debian-12.conf in the store disk"
  printf 'signed_configs: false\nstop_timeout: 20\nupdate_base_url: "file://%s"\n' "$STORE" > "$DATA/device.conf"
}

c_cmld_up() {
  start_cmld --cgroup-parent "$PARENT"
  : > /run/vmlab/empty
  ctl_ok push_guestos_config "$STORE/debian-12.conf" /run/vmlab/empty /run/vmlab/empty
  ctl_ok push_guestos_config "$STORE/ext4/debext4-12.conf" /run/vmlab/empty /run/vmlab/empty
}

# Boots it (`control start` answers at READY=1 or when its wait ends, still BOOTING: then wait on).
c_boot() { # NAME USERNS [GUESTOS]
  create "$1" "${3:-debian}" "userns: $2\n"
  t0=$(now_ns)
  ctl start "$1" > /dev/null 2>&1 || true
  wait_for 240 "[ \"\$(state $1)\" = RUNNING ]" || die "$1 is $(state "$1") after 240 s"
  echo "VMLAB time debian_boot_ms=$(( ($(now_ns) - t0) / 1000000 )) userns=$2" | tee -a "$VMLAB_RESULTS" > "$RESULTS_PORT"
}

c_system_running() { # NAME
  out=$(crun "$1" "systemctl is-system-running --wait" || true)
  case $out in
    running) ;;
    *) die "systemctl is-system-running says '$out'; failed units: $(crun "$1" 'systemctl --failed --no-legend --plain' | one_line)" ;;
  esac
}

# systemd made its own cgroups in the subtree cml delegated: init.scope holds pid 1, and the
# services run in system.slice — visible from the host below the container's cgroup.
c_cgroup_delegated() { # NAME USERNS
  uuid=$(uuid_of "$1")
  dir=/sys/fs/cgroup/$PARENT/$uuid
  [ -d "$dir/init.scope" ] || die "no init.scope below $dir: $(ls "$dir" | one_line)"
  [ -d "$dir/system.slice" ] || die "no system.slice below $dir"
  pid=$(init_pid "$1")
  grep -q "^0::/$PARENT/$uuid/init.scope\$" "/proc/$pid/cgroup" ||
    die "the guest's init is in $(cat "/proc/$pid/cgroup"), not init.scope"
  inside=$(crun "$1" "cat /proc/1/cgroup")
  [ "$inside" = "0::/init.scope" ] || die "inside, /proc/1/cgroup is '$inside'"
  if [ "$2" = true ]; then
    owner=$(stat -c %u "$dir")
    base=$(awk '$1 == 0 { print $2 }' "/proc/$pid/uid_map")
    [ "$owner" = "$base" ] || die "$dir belongs to uid $owner, not the container's root ($base)"
  fi
}

c_stop() { # NAME
  uuid=$(uuid_of "$1")
  ctl_ok stop "$1" > /dev/null
  wait_for 60 "[ \"\$(state $1)\" = STOPPED ]" || die "$1 is $(state "$1") after the stop"
  wait_for 5 "[ ! -d /sys/fs/cgroup/$PARENT/$uuid ]" || die "its cgroup stays: $(ls /sys/fs/cgroup/$PARENT/$uuid | one_line)"
}

require store c_store
require cmld-up c_cmld_up
check root-switch check_root_switch
require debian-boot c_boot deb false
check debian-system-running c_system_running deb
check debian-cgroup-delegated c_cgroup_delegated deb false
check debian-stop c_stop deb

# In a user namespace, from the ext4 root: Linux 6.1 cannot idmap squashfs (cml would fall back to a
# plain bind, the files nobody's inside, and systemd's sysusers and logind fail).
require debian-userns-boot c_boot debns true debext4
check debian-userns-system-running c_system_running debns
check debian-userns-cgroup-delegated c_cgroup_delegated debns true
check debian-userns-stop c_stop debns
