# The VM lab's scenario helpers (busybox sh), sourced by /vmlab/scenario.sh.
#
# A check is a shell function run in a subshell with `set -e`: any failing command ends it, and
# `die MSG` ends it with a reason. `check NAME FUNC [ARGS]` runs it and reports one result line,
# `VMLAB ok NAME` or `VMLAB FAIL NAME: reason` (the reason: the last `die` message, else the last
# line the check printed), to the results port (/dev/ttyS1) and the console; the check's whole
# output goes to the console after a failure. Result lines are read by scripts/vm-lab.sh.

VMLAB_RESULTS=${VMLAB_RESULTS:-/run/vmlab/results}
RESULTS_PORT=/dev/ttyS1

report() {
  echo "$*" >> "$VMLAB_RESULTS"
  echo "$*" > "$RESULTS_PORT"
  echo "$*"
}

# One `VMLAB DONE <failed>` line, on the results port and the console: by the VM's init after the
# scenario ran with status $1 (a scenario that stopped early counts as one more failure), or by a
# scenario that ends the VM itself (no argument).
report_done() {
  _failed=$(grep -c '^VMLAB FAIL ' "$VMLAB_RESULTS")
  if [ "${1:-0}" != 0 ]; then
    echo "VMLAB FAIL scenario: the scenario stopped early (status $1)" > "$RESULTS_PORT"
    _failed=$((_failed + 1))
  fi
  echo "VMLAB DONE $_failed" > "$RESULTS_PORT"
  echo "VMLAB DONE $_failed"
}

# One line, at most 400 characters.
one_line() { tr '\n\r' '  ' | sed 's/  *$//' | cut -c1-400; }

uptime_s() { cut -d' ' -f1 /proc/uptime; }

die() {
  echo "WHY: $*" >&2
  exit 1
}

check() {
  _name=$1
  shift
  _out=/run/vmlab/check.$_name
  _t=$(uptime_s)
  echo "---- check $_name (at $_t s)"
  (
    set -e
    "$@"
  ) > "$_out" 2>&1 < /dev/null
  _rc=$?
  echo "---- $_name took $(awk -v a="$_t" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s"
  if [ "$_rc" = 0 ]; then
    report "VMLAB ok $_name"
  else
    _why=$(grep '^WHY: ' "$_out" | tail -n1 | sed 's/^WHY: //')
    [ -n "$_why" ] || _why="exit $_rc after: $(grep -v '^+' "$_out" | tail -n2 | one_line)"
    report "VMLAB FAIL $_name: $(echo "$_why" | one_line)"
    sed 's/^/    | /' "$_out"
  fi
}

# A check that cannot run because an earlier one failed.
skip() { report "VMLAB FAIL $1: not run: $2"; }

# Like `check`, but a check that must pass for later ones to mean anything: stops the scenario.
require() {
  _before=$(grep -c '^VMLAB FAIL ' "$VMLAB_RESULTS")
  check "$@"
  [ "$(grep -c '^VMLAB FAIL ' "$VMLAB_RESULTS")" = "$_before" ] || exit 1
}

failures() { grep -c '^VMLAB FAIL ' "$VMLAB_RESULTS"; }

# Nanoseconds since the epoch (coreutils date: busybox's has no %N).
now_ns() { /vmlab/bin/date +%s%N; }

# The median of the numbers on stdin.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "none"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --- cmld and control --------------------------------------------------------------------------

CMLD_LOG=${CMLD_LOG:-/run/vmlab/cmld.log}
CMLD_PIDFILE=${CMLD_PIDFILE:-/run/vmlab/cmld.pid}

# `control` against the lab's cmld, bounded: a hung request fails the check instead of the VM.
ctl() { timeout 120 control -s "$SOCK" "$@"; }

# ctl, and a failure ends the check with control's words.
ctl_ok() {
  _o=$(ctl "$@" 2>&1) || die "control $* failed ($?): $(echo "$_o" | one_line)"
  [ -z "$_o" ] || echo "$_o"
}

# `control run C nopty sh -c SCRIPT`, stderr included.
crun() {
  _c=$1
  shift
  ctl run "$_c" nopty sh -c "exec 2>&1; $*"
}

state() { ctl state "$1" 2>&1; }

expect_state() {
  _s=$(state "$1")
  [ "$_s" = "$2" ] || die "$1 is $_s, not $2"
}

# UUID of a container (from `control list`).
uuid_of() { ctl list | awk -v n="$1" '$1 == n { print $2; exit }'; }

# The init's pid as the host sees it (`state --json`).
init_pid() { ctl --json state "$1" | sed -n 's/.*"pid": *\([0-9][0-9]*\).*/\1/p' | head -n1; }

# Creates a container of GUESTOS with token NONE and EXTRA config text (printf %b: \n is a newline).
create() { # NAME GUESTOS EXTRA
  _f=/run/vmlab/$1.conf
  printf 'name: "%s"\nguest_os: "%s"\ncolor: 1\ntoken_type: NONE\n%b' "$1" "$2" "$3" > "$_f"
  ctl_ok create "$_f" > /dev/null
}

# Starts $CMLD (default cmld) in the background on $DATA/$SOCK/$RUN, appending to $CMLD_LOG, its
# pid in $CMLD_PIDFILE; waits for its socket.
start_cmld() {
  "${CMLD:-cmld}" --data-dir "$DATA" --socket "$SOCK" --run-dir "$RUN" "$@" >> "$CMLD_LOG" 2>&1 < /dev/null &
  echo $! > "$CMLD_PIDFILE"
  _i=0
  while [ $_i -lt 300 ]; do
    ctl list > /dev/null 2>&1 && return 0
    kill -0 "$(cmld_pid)" 2>/dev/null || die "cmld exited: $(tail -n 3 "$CMLD_LOG" | one_line)"
    sleep 0.1
    _i=$((_i + 1))
  done
  die "cmld's socket did not answer within 30 s"
}

cmld_pid() { cat "$CMLD_PIDFILE"; }

# 10 start/stop cycles of container $1 (stopped, started once before), each after 0.3 s idle, by
# a fresh `control`: the medians in ms, "START STOP", go to /run/vmlab/times.
time_start_stop() {
  ctl_ok start "$1"
  ctl_ok stop "$1"
  : > /run/vmlab/start_ns
  : > /run/vmlab/stop_ns
  i=0
  while [ $i -lt 10 ]; do
    sleep 0.3
    a=$(now_ns)
    ctl start "$1" > /dev/null 2>&1 || die "start $i failed"
    b=$(now_ns)
    sleep 0.3
    c=$(now_ns)
    ctl stop "$1" > /dev/null 2>&1 || die "stop $i failed"
    d=$(now_ns)
    echo $(((b - a) / 1000)) >> /run/vmlab/start_ns
    echo $(((d - c) / 1000)) >> /run/vmlab/stop_ns
    i=$((i + 1))
  done
  start_us=$(median < /run/vmlab/start_ns)
  stop_us=$(median < /run/vmlab/stop_ns)
  echo "start µs: $(one_line < /run/vmlab/start_ns); stop µs: $(one_line < /run/vmlab/stop_ns)"
  awk -v a="$start_us" -v b="$stop_us" 'BEGIN { printf "%.1f %.1f\n", a / 1000, b / 1000 }' > /run/vmlab/times
}

# Polls COMMAND (a shell string) for up to SECONDS; true once it succeeds.
wait_for() { # SECONDS COMMAND
  _end=$(($(date +%s) + $1))
  while :; do
    eval "$2" > /dev/null 2>&1 && return 0
    [ "$(date +%s)" -lt "$_end" ] || return 1
    sleep 0.1
  done
}

# Where the scenario runs: `initramfs` (the initial rootfs, vmlab.root=initramfs) or `tmpfs`.
vm_root() {
  case " $(cat /proc/cmdline) " in
    *" vmlab.root=initramfs "*) echo initramfs ;;
    *) echo tmpfs ;;
  esac
}

# cmld ($CMLD_LOG) enters containers' roots the way this VM's root calls for: on the initial rootfs
# (the mount namespace's root: its own parent) by a move + chroot, which a hosted cmld logs as a
# warning; after switch_root by pivot_root, without a word.
check_root_switch() {
  root=$(awk '$5 == "/"' /proc/self/mountinfo | head -n1)
  echo "the VM's root: $root"
  said=$(grep 'MS_MOVE + chroot' "$CMLD_LOG" || true)
  if [ "$(vm_root)" = tmpfs ]; then
    if [ -n "$said" ]; then die "cmld moves containers' roots on a switched root: $said"; fi
    return 0
  fi
  echo "$root" | awk '$1 == $2' | grep -q ' - rootfs ' || die "the VM's root is not the initial rootfs: $root"
  [ -n "$said" ] || die "cmld did not say it enters containers' roots by MS_MOVE + chroot"
  echo "$said"
  if grep 'cmld starting' "$CMLD_LOG" | grep -q 'hosted=true'; then
    echo "$said" | grep -q WARN || die "a hosted cmld does not warn about it"
  fi
}

dump_cmld_log() {
  echo "===== cmld log ($CMLD_LOG) ====="
  cat "$CMLD_LOG"
  echo "===== end of the cmld log ====="
}
