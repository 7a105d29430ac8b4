# The hosted scenario: a real cmld in hosted mode on a tmpfs data dir, on a pure cgroup-v2 kernel,
# checked the way a user would check it — with control, ip, ps and the files under /proc and
# /sys/fs/cgroup. Each `check NAME` is one result line (lib.sh).
. /vmlab/lib.sh
DATA=/var/lib/cml-lab
SOCK=/run/vmlab/cml.sock
RUN=/run/cml-lab
PARENT=cml
CG=/sys/fs/cgroup/$PARENT
mkdir -p "$DATA"
trap '[ "$(failures)" = 0 ] || dump_cmld_log' EXIT
printf 'signed_configs: false\nstop_timeout: 3\n' > "$DATA/device.conf"

# A plain busybox container: no user namespace, no network namespace.
PLAIN='userns: false\nnetns: false\n'

# --- daemon and GuestOS ------------------------------------------------------------------------

c_cmld_up() {
  start_cmld --cgroup-parent "$PARENT"
  ctl_ok list
}

c_cgroup_layout() {
  line=$(grep 'cgroup controllers' "$CMLD_LOG" | tail -n1)
  [ -n "$line" ] || die "cmld logged no cgroup layout"
  echo "$line"
  for c in memory cpuset pids devices freezer; do
    echo "$line" | grep -q "$c=v2" || die "cmld does not use $c through v2: $line"
  done
  ! grep -q ' cgroup ' /proc/mounts || die "a v1 hierarchy is mounted: $(grep ' cgroup ' /proc/mounts | one_line)"
}

c_guestos_push() {
  ctl_ok ca_register /vmlab/pki/root-ca.cert
  for g in busybox bbext4 bbdata; do
    ctl_ok push_guestos_config "/vmlab/store/$g-1.conf" "/vmlab/store/$g-1.conf.sig" /vmlab/pki/signing.cert
  done
  ctl list_guestos | grep -q busybox || die "list_guestos does not list busybox"
}

# --- lifecycle -----------------------------------------------------------------------------------

c_create_start() {
  create life busybox "${PLAIN}ram_limit: 64\n"
  ctl_ok start life
  expect_state life RUNNING
}

c_run_output() {
  out=$(ctl run life nopty echo hello from life)
  [ "$out" = "hello from life" ] || die "run printed '$out'"
  rc=0
  ctl run life nopty sh -c 'exit 3' || rc=$?
  [ "$rc" = 3 ] || die "run of 'exit 3' exited $rc"
}

c_cgroup_v2_dir() {
  uuid=$(uuid_of life)
  dir=$CG/$uuid
  [ -d "$dir" ] || die "no $dir: $(ls "$CG" 2>&1 | one_line)"
  [ "$(cat "$dir/memory.max")" = $((64 * 1024 * 1024)) ] || die "memory.max is $(cat "$dir/memory.max")"
  [ "$(cat "$dir/pids.max")" = 4096 ] || die "pids.max is $(cat "$dir/pids.max")"
  pid=$(init_pid life)
  [ -n "$pid" ] || die "no init pid in state --json"
  cg=$(cat "/proc/$pid/cgroup")
  case $cg in "0::/$PARENT/$uuid" | "0::/$PARENT/$uuid/"*) ;; *) die "the init is in cgroup $cg" ;; esac
  for c in memory pids cpuset; do
    grep -qw "$c" "$CG/cgroup.subtree_control" || die "$c not enabled in $CG/cgroup.subtree_control"
  done
}

# assign_cpus through cpuset.cpus: the container's tasks may run on CPU 1 only; swap is capped too.
c_cpuset() {
  create pinned busybox "assign_cpus: \"1\"\nram_limit: 32\n$PLAIN"
  ctl_ok start pinned
  dir=$CG/$(uuid_of pinned)
  [ "$(cat "$dir/cpuset.cpus")" = 1 ] || die "cpuset.cpus is '$(cat "$dir/cpuset.cpus")'"
  [ "$(cat "$dir/cpuset.cpus.effective")" = 1 ] || die "cpuset.cpus.effective is '$(cat "$dir/cpuset.cpus.effective")'"
  inside=$(crun pinned 'grep Cpus_allowed_list /proc/self/status')
  echo "$inside" | grep -q '[[:space:]]1$' || die "inside: $inside"
  if [ -f "$dir/memory.swap.max" ]; then
    [ "$(cat "$dir/memory.swap.max")" = 0 ] || die "memory.swap.max is $(cat "$dir/memory.swap.max")"
  fi
  ctl_ok stop pinned
}

c_freeze() {
  ctl_ok freeze life
  expect_state life FROZEN
  dir=$CG/$(uuid_of life)
  [ "$(cat "$dir/cgroup.freeze")" = 1 ] || die "cgroup.freeze is $(cat "$dir/cgroup.freeze")"
  grep -qx 'frozen 1' "$dir/cgroup.events" || die "cgroup.events: $(one_line < "$dir/cgroup.events")"
  pid=$(init_pid life)
  grep -q '^State:.*(stopped)\|^State:.*T' "/proc/$pid/status" || echo "init state: $(grep ^State "/proc/$pid/status")"
}

c_unfreeze() {
  ctl_ok unfreeze life
  expect_state life RUNNING
  grep -qx 'frozen 0' "$CG/$(uuid_of life)/cgroup.events" || die "still frozen"
  [ "$(ctl run life nopty echo thawed)" = thawed ] || die "run after unfreeze failed"
}

# --- isolation (a subset of tests/isolation.rs) ------------------------------------------------

c_iso_pidns() {
  out=$(crun life 'cat /proc/1/cmdline | tr "\0" " "; echo; ls /proc | grep -c "^[0-9]"')
  echo "$out"
  echo "$out" | head -n1 | grep -q '^/bin/sh -c' || die "pid 1 inside is not the guest's init: $(echo "$out" | head -n1)"
  n=$(echo "$out" | tail -n1)
  [ "$n" -lt 10 ] || die "$n processes visible inside"
  ! crun life 'ps -o args' | grep -q cmld || die "cmld is visible inside: $(crun life 'ps -o pid,args' | one_line)"
}

c_iso_hostname() {
  [ "$(crun life hostname)" = life ] || die "hostname inside is $(crun life hostname)"
  [ "$(hostname)" = vmlab ] || die "the VM's hostname changed to $(hostname)"
}

c_iso_mounts() {
  m=$(crun life 'cat /proc/self/mounts')
  echo "$m"
  ! echo "$m" | grep -q "/vmlab\|$DATA\|/run/vmlab" || die "host paths in the container's mounts"
  ! crun life 'ls /vmlab' > /dev/null || die "/vmlab is visible inside"
}

c_iso_cgroup_view() {
  out=$(crun life 'cat /proc/self/cgroup')
  [ "$out" = "0::/" ] || die "/proc/self/cgroup inside: $out"
  [ "$(crun life 'cat /sys/fs/cgroup/memory.max')" = $((64 * 1024 * 1024)) ] ||
    die "/sys/fs/cgroup/memory.max inside: $(crun life 'cat /sys/fs/cgroup/memory.max' | one_line)"
  ls=$(crun life 'ls /sys/fs/cgroup')
  ! echo "$ls" | grep -q -e "$PARENT" -e '-.*-.*-' || die "other cgroups visible inside: $(echo "$ls" | one_line)"
  ! crun life 'echo max > /sys/fs/cgroup/memory.max' > /dev/null || die "the ram limit can be raised from inside"
  [ "$(cat "$CG/$(uuid_of life)/memory.max")" = $((64 * 1024 * 1024)) ] || die "memory.max changed"
}

c_stop() {
  uuid=$(uuid_of life)
  ctl_ok stop life
  expect_state life STOPPED
  wait_for 5 "[ ! -e $CG/$uuid ]" || die "$CG/$uuid is left after the stop: $(ls "$CG/$uuid" | one_line)"
}

# --- persistent volumes --------------------------------------------------------------------------

c_ext4_volume() {
  create vol bbdata "$PLAIN"
  ctl_ok start vol
  crun vol 'grep " /data " /proc/mounts' | grep -q ' ext4 ' ||
    die "/data is not ext4: $(crun vol 'cat /proc/mounts' | one_line)"
  crun vol 'echo kept > /data/file && sync'
  ctl_ok stop vol
  ctl_ok start vol
  [ "$(crun vol 'cat /data/file')" = kept ] || die "/data/file did not survive a restart"
  ctl_ok stop vol
}

c_soft_token() {
  printf 'name: "secret"\nguest_os: "bbdata"\ncolor: 1\ntoken_type: SOFT\nuserns: false\nnetns: false\n' > /run/vmlab/secret.conf
  ctl_ok create /run/vmlab/secret.conf > /dev/null
  ctl_ok start secret --key=trustme
  ctl --json state secret | grep -q '"cryptfs_mode": *"ENCRYPT_ONLY"' ||
    die "not encrypted: $(ctl --json state secret | one_line)"
  crun secret 'echo secret > /data/s && sync'
  ctl_ok stop secret --key=trustme
  ctl_ok start secret --key=trustme
  [ "$(crun secret 'cat /data/s')" = secret ] || die "/data/s did not survive a restart"
  ctl_ok stop secret --key=trustme
}

# --- limits --------------------------------------------------------------------------------------

c_ram_limit() {
  create hog busybox "${PLAIN}ram_limit: 32\ninit_env: \"INIT=sleep 99999 &\"\n"
  ctl_ok start hog
  crun hog 'ps -o pid,args' | grep -q 'sleep 99999' || die "no bystander before the hog"
  rc=0
  out=$(crun hog 'tail /dev/zero') || rc=$?
  [ "$rc" = 137 ] || die "the memory hog ended with $rc, not 137 (SIGKILL): $(echo "$out" | one_line)"
  expect_state hog RUNNING
  crun hog 'ps -o pid,args' | grep -q 'sleep 99999' || die "the bystander was killed too"
  events=$(cat "$CG/$(uuid_of hog)/memory.events")
  echo "$events"
  echo "$events" | grep -q '^oom_kill [1-9]' || die "memory.events counts no oom_kill: $(echo "$events" | one_line)"
  ctl_ok stop hog
}

c_pids_limit() {
  create bomb busybox "$PLAIN"
  ctl_ok start bomb
  dir=$CG/$(uuid_of bomb)
  # Forks until fork fails (ash gives up at the first failed fork). Each child blocks opening a
  # fifo: a fork without an exec is cheap under TCG. Nothing of `control run`'s stays open in the
  # children (ash keeps copies of a builtin's redirected descriptors), so the run ends with the loop.
  rc=0
  crun bomb 'exec > /dev/null 2>&1 < /dev/null; mkfifo /run/hold; while :; do read x < /run/hold & done' || rc=$?
  echo "the loop ended with status $rc"
  cur=$(cat "$dir/pids.current")
  events=$(cat "$dir/pids.events")
  echo "pids.current $cur; pids.events: $events"
  echo "$events" | grep -q '^max [1-9]' || die "pids.events counts no refused fork ($events; pids.current $cur)"
  [ "$cur" -le 4096 ] || die "pids.current $cur is above pids.max 4096"
  [ "$cur" -ge 4000 ] || die "only $cur processes: the fork failed for another reason"
  ctl_ok list > /dev/null
  sh -c 'true' || die "the VM cannot fork"
  ctl_ok stop bomb
  expect_state bomb STOPPED
}

# --- device filtering ----------------------------------------------------------------------------
# The container's /dev holds only the allowed nodes. The lab puts a node the rules deny into it from
# the host (loop-control, c 10:237: no capability is needed to open it), as a process with
# CAP_MKNOD could, and checks that the device filter refuses it.

DENIED=/dev/vmlab-denied

opens() { crun devbox ": < $1"; }

expect_eperm() { # NODE WHY
  out=$(opens "$1") && die "$1 opened: $2"
  echo "$out" | grep -q 'Operation not permitted' || die "opening $1 failed, but not with EPERM: $(echo "$out" | one_line)"
}

c_dev_setup() {
  create devbox busybox "$PLAIN"
  ctl_ok start devbox
  pid=$(init_pid devbox)
  mknod "/proc/$pid/root$DENIED" c 10 237
  crun devbox "ls -l $DENIED"
}

c_dev_allowed() {
  out=$(crun devbox 'echo x > /dev/null && head -c 4 /dev/zero | wc -c')
  [ "$out" = 4 ] || die "/dev/null or /dev/zero: $(echo "$out" | one_line)"
}

c_dev_denied() {
  expect_eperm "$DENIED" "c 10:237 is not in the allow-list; the device filter is not enforced"
}

c_dev_mknod_denied() {
  out=$(crun devbox 'mknod /dev/vmlab-mknod c 10 237 && echo made') || true
  [ "$out" != made ] || die "mknod of a denied device (c 10:237) succeeded inside"
}

c_dev_access_runtime() {
  ctl_ok dev_access devbox "c 10:237 rw"
  opens "$DENIED" > /dev/null || die "allowed at run time (c 10:237 rw), still refused: $(opens "$DENIED" | one_line)"
  ctl_ok dev_access devbox "deny c 10:237 rwm"
  expect_eperm "$DENIED" "denied again at run time, still opens"
  ctl_ok dev_access devbox "deny c 1:3 rwm"
  out=$(crun devbox 'echo x > /dev/null') && die "/dev/null writable after 'deny c 1:3 rwm'"
  echo "$out" | grep -q 'Operation not permitted' || die "/dev/null after deny: $(echo "$out" | one_line)"
  ctl_ok dev_access devbox "c 1:3 rwm"
  crun devbox 'echo x > /dev/null' || die "/dev/null not writable after allowing it again"
}

c_dev_deny_after_wildcard() {
  ctl_ok dev_access devbox "c *:* rwm"
  opens "$DENIED" > /dev/null || die "not opened under 'c *:* rwm'"
  ctl_ok dev_access devbox "deny c 10:237 rwm"
  expect_eperm "$DENIED" "a deny after a wildcard allow does not win"
  crun devbox 'echo x > /dev/null' || die "/dev/null refused"
}

# --- user namespace ------------------------------------------------------------------------------

c_userns() {
  create mapped bbext4 'netns: false\n'
  ctl_ok start mapped
  [ "$(crun mapped 'id -u')" = 0 ] || die "id -u inside: $(crun mapped 'id -u' | one_line)"
  pid=$(init_pid mapped)
  map=$(head -n1 "/proc/$pid/uid_map")
  echo "uid_map: $map"
  set -- $map
  [ "$1" = 0 ] && [ "$2" -ge 100000 ] && [ "$3" = 65536 ] || die "uid_map of the init: $map"
  uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
  [ "$uid" = "$2" ] || die "the init runs as host uid $uid, not $2"
  ps -o user,pid,args | awk -v p="$pid" '$2 == p' | grep -q "^$uid \|^ *$uid " || echo "ps: $(ps -o user,pid,args | awk -v p="$pid" '$2 == p')"
  owner=$(crun mapped 'stat -c %u /bin/busybox')
  [ "$owner" = 0 ] || die "the idmapped ext4 root's files belong to uid $owner inside, not 0"
  # The container's cgroup is delegated to its root: owned by the mapped uid on the host, and the
  # guest makes a sub-cgroup, moves itself there and enables a controller below its root.
  dir=/sys/fs/cgroup/cml/$(uuid_of mapped)
  [ "$(stat -c %u "$dir")" = "$2" ] || die "$dir belongs to uid $(stat -c %u "$dir"), not $2"
  crun mapped 'mkdir /sys/fs/cgroup/payload && echo $$ > /sys/fs/cgroup/payload/cgroup.procs && cat /proc/self/cgroup' |
    grep -qx '0::/payload' || die "the guest cannot move itself into a cgroup of its own"
  crun mapped 'mkdir -p /sys/fs/cgroup/init.scope && for p in $(cat /sys/fs/cgroup/cgroup.procs); do echo $p > /sys/fs/cgroup/init.scope/cgroup.procs 2>/dev/null; done; echo +pids > /sys/fs/cgroup/cgroup.subtree_control && cat /sys/fs/cgroup/payload/cgroup.controllers' |
    grep -qw pids || die "the guest cannot enable pids for its sub-cgroups"
  [ -d "$dir/payload" ] || die "the guest's cgroup is not below its own on the host"
  ! crun mapped 'echo 1G > /sys/fs/cgroup/memory.max' 2>/dev/null || die "the guest raised its own memory.max"
  ctl_ok stop mapped
  wait_for 5 "[ ! -d $dir ]" || die "$dir (with the guest's sub-cgroups) stays after the stop"
}

# --- network -------------------------------------------------------------------------------------

host_link() { ip link show "$1" > /dev/null 2>&1; }

c_veth() {
  create net busybox 'userns: false\n'
  ctl_ok start net
  addr=$(crun net 'ip -4 addr show eth0' | sed -n 's/.*inet \([0-9.]*\)\/24.*/\1/p')
  [ -n "$addr" ] || die "eth0 inside has no IPv4 /24: $(crun net 'ip addr' | one_line)"
  gw=${addr%.*}.1
  crun net "ip route" | grep -q "default via $gw" || die "no default route via $gw: $(crun net 'ip route' | one_line)"
  crun net "ping -c 1 -W 3 $gw" > /dev/null || die "the container cannot ping its host side $gw"
  ping -c 1 -W 3 "$addr" > /dev/null || die "the VM cannot ping the container at $addr"
  ip -o link show | grep -q 'cml-' || die "no host side cml-N: $(ip -o link show | one_line)"
}

c_dummy_assign() {
  ip link add vmd0 type dummy
  ctl_ok assign_iface --iface vmd0 net
  crun net 'ip link show vmd0' > /dev/null || die "vmd0 is not inside after assign_iface: $(crun net 'ip -o link' | one_line)"
  ! host_link vmd0 || die "vmd0 is still on the host"
  ctl_ok stop net
  wait_for 5 'host_link vmd0' || die "vmd0 did not come back to the host after the stop"
  ! ip -o link show | grep -q 'cml-' || die "the host side of the veth is left: $(ip -o link show | grep cml- | one_line)"
}

c_dummy_net_ifaces() {
  ip link add vmd1 type dummy
  create pnet busybox 'userns: false\nnet_ifaces {\n  netif: "vmd1"\n}\n'
  ctl_ok start pnet
  crun pnet 'ip link show vmd1' > /dev/null || die "vmd1 (net_ifaces) is not inside"
  ! host_link vmd1 || die "vmd1 is still on the host"
  ctl_ok stop pnet
  wait_for 5 'host_link vmd1' || die "vmd1 did not come back to the host"
}

# --- adoption after kill -9 of cmld ---------------------------------------------------------------

c_adoption() {
  create adopt-run busybox "$PLAIN"
  create adopt-frz busybox "$PLAIN"
  ctl_ok start adopt-run
  ctl_ok start adopt-frz
  ctl_ok freeze adopt-frz
  expect_state adopt-frz FROZEN
  p_run=$(init_pid adopt-run)
  p_frz=$(init_pid adopt-frz)
  kill -9 "$(cmld_pid)"
  wait_for 5 "! kill -0 $(cmld_pid)" || die "cmld survived kill -9"
  kill -0 "$p_run" && kill -0 "$p_frz" || die "a container died with cmld"
  start_cmld --cgroup-parent "$PARENT"
  expect_state adopt-run RUNNING
  expect_state adopt-frz FROZEN
  [ "$(ctl run adopt-run nopty echo adopted)" = adopted ] || die "run into the adopted container failed"
  [ "$(init_pid adopt-run)" = "$p_run" ] || die "adopt-run has a new init"
  ctl_ok unfreeze adopt-frz
  expect_state adopt-frz RUNNING
  [ "$(ctl run adopt-frz nopty echo thawed)" = thawed ] || die "run into the thawed adopted container failed"
  ctl_ok stop adopt-run
  ctl_ok stop adopt-frz
}

# --- timings -------------------------------------------------------------------------------------

c_timing() {
  create timed busybox "$PLAIN"
  time_start_stop timed
}

c_cmld_sigterm() {
  kill -TERM "$(cmld_pid)"
  wait_for 30 "! kill -0 $(cmld_pid)" || die "cmld did not exit on SIGTERM"
  wait "$(cmld_pid)" 2> /dev/null || true
  [ ! -e "$CG" ] || die "$CG is left after cmld's exit: $(ls "$CG" | one_line)"
}

require cmld-up c_cmld_up
check cgroup-layout-v2 c_cgroup_layout
require guestos-push c_guestos_push

require create-start c_create_start
check run-output c_run_output
check cgroup-v2-dir c_cgroup_v2_dir
check cpuset c_cpuset
check iso-pidns c_iso_pidns
check iso-hostname c_iso_hostname
check iso-mounts c_iso_mounts
check iso-cgroup-view c_iso_cgroup_view
check freeze c_freeze
check unfreeze c_unfreeze
check stop-cgroup-removed c_stop

check ext4-volume c_ext4_volume
check soft-token-fscrypt c_soft_token

check ram-limit c_ram_limit
check pids-limit c_pids_limit

require dev-setup c_dev_setup
check dev-null-allowed c_dev_allowed
check dev-denied-eperm c_dev_denied
check dev-mknod-denied c_dev_mknod_denied
check dev-access-runtime c_dev_access_runtime
check dev-deny-after-wildcard c_dev_deny_after_wildcard
ctl stop devbox > /dev/null 2>&1

check userns-mapped c_userns

check veth c_veth
check dummy-assign-iface c_dummy_assign
check dummy-net-ifaces c_dummy_net_ifaces

check adoption c_adoption

check timing c_timing
[ -s /run/vmlab/times ] && report "VMLAB time start_ms=$(cut -d' ' -f1 /run/vmlab/times) stop_ms=$(cut -d' ' -f2 /run/vmlab/times)"

check cmld-sigterm-clean c_cmld_sigterm
