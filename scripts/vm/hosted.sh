# The hosted scenario (sourced helpers: lib.sh): a real cmld in hosted mode on a tmpfs data dir,
# on a pure cgroup-v2 kernel.
. /vmlab/lib.sh
DATA=/var/lib/cml-lab
SOCK=/run/vmlab/cml.sock
RUN=/run/cml-lab
PARENT=cml
mkdir -p "$DATA"
trap '[ "$(failures)" = 0 ] || dump_cmld_log' EXIT
printf 'signed_configs: false\nstop_timeout: 3\n' > "$DATA/device.conf"

c_cmld_up() {
  start_cmld --cgroup-parent "$PARENT"
  ctl_ok list
}
c_cgroup_layout() {
  grep -q 'cgroup controllers' "$CMLD_LOG" || die "cmld logged no cgroup layout"
  line=$(grep 'cgroup controllers' "$CMLD_LOG" | tail -n1)
  echo "$line"
  for c in memory cpuset pids devices freezer; do
    echo "$line" | grep -q "$c=v2" || die "cmld does not use $c through v2: $line"
  done
}
c_guestos_push() {
  ctl_ok ca_register /vmlab/pki/root-ca.cert
  for g in busybox bbext4; do
    ctl_ok push_guestos_config "/vmlab/store/$g-1.conf" "/vmlab/store/$g-1.conf.sig" /vmlab/pki/signing.cert
  done
  ctl list_guestos | grep -q busybox || die "busybox is not listed by list_guestos"
}

require cmld-up c_cmld_up
check cgroup-layout-v2 c_cgroup_layout
require guestos-push c_guestos_push

