# The install scenario: cml's Debian package on a Debian 12 host with systemd as pid 1 (pure
# cgroup v2; scripts/vm/systemd-host.sh), as a user meets it. The host passes the two packages
# (/vmlab/deb/old/, /vmlab/deb/new/: the same cml, the second a higher revision), the busybox
# GuestOS `keeper` and a signed config of a SOFT-token container `demo` of it, with the development
# PKI that signed both (scripts/vm/guestos.sh). The container's init appends a line to its
# persistent /data/stop-marker when it is stopped (the first SIGTERM), so the count of lines tells
# how often it was stopped gracefully. The package is installed offline (everything it depends on is in the
# image), used with its defaults (device.conf: signed configs; socket /run/socket/cml-control),
# restarted, upgraded, stopped, removed and purged. Each step also reports `VMLAB time STEP_s=…`.
. /vmlab/lib.sh
SOCK=/run/socket/cml-control
CMLD_LOG=/run/vmlab/cmld.journal
OLD=$(ls /vmlab/deb/old/*.deb)
NEW=$(ls /vmlab/deb/new/*.deb)
V_OLD=$(dpkg-deb -f "$OLD" Version)
V_NEW=$(dpkg-deb -f "$NEW" Version)
PIN=trustme   # the device token's default PIN
# cmld's log is the journal's (with systemd's lines about its units): on the console at the end
# (scripts/vm-lab.sh shows it after a failure; `--keep` keeps it).
trap 'journalctl -u cmld -u cmld.socket --no-pager -o short-monotonic > "$CMLD_LOG" 2>&1; dump_cmld_log' EXIT

# `check`, and a `VMLAB time NAME_s=…` line with its duration.
timed() { # NAME FUNC
  _t0=$(now_ns)
  check "$@"
  report "VMLAB time $1_s=$(awk -v a="$_t0" -v b="$(now_ns)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
}

installed_version() { dpkg-query -W -f='${Status} ${Version}' cml 2>/dev/null; }

# apt as a user runs it (no DEBIAN_FRONTEND, no tty: stdin is /dev/null), bounded so that a prompt
# fails the check instead of hanging the VM.
apt_() { env -u DEBIAN_FRONTEND timeout 300 apt "$@" < /dev/null; }

# `apt install -y ./cml_….deb` in the package's directory, as a user installs a downloaded one.
apt_install_file() { (cd "$(dirname "$1")" && apt_ install -y "./$(basename "$1")"); }

# cmld's main pid as systemd knows it (0 when it does not run).
main_pid() { systemctl show -p MainPID --value cmld.service; }

# The lines cmld's current process logged to the journal.
journal_of() { journalctl -u cmld.service "_PID=$1" --no-pager -o cat; }

# The number of graceful stops the container's init recorded.
stop_marks() { crun demo 'cat /data/stop-marker 2>/dev/null || true' | grep -c '^stopped by SIGTERM' || true; }

# The container's cgroup directory as the host sees it (from its init's /proc/PID/cgroup).
cgroup_of() { echo "/sys/fs/cgroup$(sed -n 's/^0:://p' "/proc/$1/cgroup")"; }

wait_answers() { wait_for 60 'ctl list' || die "cmld does not answer on $SOCK within 60 s: $(systemctl status --no-pager cmld 2>&1 | tail -n 5 | one_line)"; }

# Still RUNNING with the init the container had (pid file /run/vmlab/demo.pid), and `run` works.
same_container() { # WHAT
  pid=$(cat /run/vmlab/demo.pid)
  expect_state demo RUNNING
  now=$(init_pid demo)
  [ "$now" = "$pid" ] || die "$1: the init's pid is $now, was $pid"
  [ -d "/proc/$pid" ] || die "$1: the init (pid $pid) is gone"
  [ "$(crun demo hostname)" = demo ] || die "$1: control run does not work"
  [ "$(stop_marks)" = "$(cat /run/vmlab/demo.marks)" ] || die "$1: the container was stopped (stop-marker: $(crun demo 'cat /data/stop-marker' | one_line))"
}

# 1. The package installs offline with its dependencies from the image.
c_apt_install() {
  echo "installing $OLD ($V_OLD)"
  apt_install_file "$OLD" || die "apt install $OLD failed ($?)"
  v=$(installed_version)
  [ "$v" = "install ok installed $V_OLD" ] || die "dpkg-query says '$v'"
  for f in /usr/sbin/cmld /usr/bin/control /usr/bin/cml-guestos /usr/bin/cml-web /etc/default/cmld \
    /usr/lib/systemd/system/cmld.service /usr/lib/systemd/system/cmld.socket; do
    [ -e "$f" ] || die "the package did not install $f"
  done
}

# 2. The service as installed: socket and service active, Type=notify, the group, the CLI on the
#    default socket.
c_service_up() {
  wait_for 30 '[ "$(systemctl is-active cmld.socket)" = active ]' ||
    die "cmld.socket is $(systemctl is-active cmld.socket)"
  wait_for 30 '[ "$(systemctl is-active cmld.service)" = active ]' ||
    die "cmld.service is $(systemctl is-active cmld.service): $(systemctl status --no-pager cmld 2>&1 | tail -n 5 | one_line)"
  systemctl is-enabled cmld.service cmld.socket
  type=$(systemctl show -p Type --value cmld.service)
  [ "$type" = notify ] || die "cmld.service has Type=$type, not notify"
  listen=$(systemctl show -p Listen --value cmld.socket)
  echo "cmld.socket listens on: $listen"
  echo "$listen" | grep -q "$SOCK" || die "cmld.socket listens on '$listen', not $SOCK"
  getent group cml-control || die "no group cml-control"
  ls -l "$SOCK"
  control list || die "control list on the default socket failed ($?)"
}

# 3. The demo flow: trust the PKI, push the GuestOS, create the signed container, start it with
#    the token's PIN, run a command in it.
c_demo_flow() {
  ctl_ok ca_register /vmlab/pki/root-ca.cert
  ctl_ok push_guestos_config /vmlab/store/keeper-1.conf /vmlab/store/keeper-1.conf.sig /vmlab/pki/signing.cert
  ctl_ok create /vmlab/demo.conf /vmlab/demo.conf.sig /vmlab/pki/signing.cert
  ctl_ok start demo --key=$PIN
  expect_state demo RUNNING
  out=$(crun demo hostname)
  [ "$out" = demo ] || die "control run demo hostname printed '$out'"
  pid=$(init_pid demo)
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || die "no init pid in control state --json"
  echo "$pid" > /run/vmlab/demo.pid
  stop_marks > /run/vmlab/demo.marks
  [ "$(cat /run/vmlab/demo.marks)" = 0 ] || die "a fresh container has a stop marker"
  report "VMLAB info demo_init_cgroup=$(cgroup_of "$pid") cmld_cgroup=$(cgroup_of "$(main_pid)")"
  # Besides the initramfs's virtio and ext4 ones, loaded on demand (modprobe, the image's depmod).
  report "VMLAB info modules_loaded=$(awk '{ print $1 }' /proc/modules | sort | tr '\n' ' ')"
  ctl list
}

# 4. `systemctl restart cmld`: the new cmld adopts the running container.
c_restart_adopts() {
  before=$(main_pid)
  systemctl restart cmld.service || die "systemctl restart cmld failed ($?)"
  after=$(main_pid)
  [ "$after" != 0 ] && [ "$after" != "$before" ] || die "cmld's main pid is $after after the restart (was $before)"
  wait_answers
  journal_of "$before" | tail -n 5
  same_container "after systemctl restart"
  journal_of "$after" | grep 'adopted a running container' ||
    die "the new cmld (pid $after) did not log adopting it: $(journal_of "$after" | tail -n 4 | one_line)"
}

# 5. The upgrade to the newer package: the container keeps running and is adopted by the new cmld.
c_upgrade() {
  before=$(main_pid)
  echo "upgrading to $NEW ($V_NEW)"
  apt_install_file "$NEW" || die "apt install $NEW failed ($?)"
  v=$(installed_version)
  [ "$v" = "install ok installed $V_NEW" ] || die "dpkg-query says '$v' after the upgrade"
  wait_for 30 '[ "$(systemctl is-active cmld.service)" = active ]' || die "cmld.service is $(systemctl is-active cmld.service) after the upgrade"
  wait_answers
  after=$(main_pid)
  same_container "after the upgrade"
  [ "$after" != "$before" ] || die "the upgrade did not restart cmld (main pid still $after): the old binary runs on"
  journal_of "$after" | grep 'adopted a running container' ||
    die "the upgraded cmld (pid $after) did not log adopting it: $(journal_of "$after" | tail -n 4 | one_line)"
}

# ... and a stop (gracefully: a new stop-marker line) and a start of it with the upgraded cmld.
c_stop_start_after_upgrade() {
  pid=$(cat /run/vmlab/demo.pid)
  ctl_ok stop demo --key=$PIN
  expect_state demo STOPPED
  [ ! -d "/proc/$pid" ] || die "the init (pid $pid) still runs after control stop"
  ctl_ok start demo --key=$PIN
  expect_state demo RUNNING
  init_pid demo > /run/vmlab/demo.pid
  [ "$(crun demo hostname)" = demo ] || die "control run does not work after the new start"
  marks=$(stop_marks)
  [ "$marks" = 1 ] || die "the stop-marker has $marks lines, not 1: control stop was not graceful ($(crun demo 'cat /data/stop-marker' | one_line))"
  echo "$marks" > /run/vmlab/demo.marks
}

# 6. `systemctl stop cmld` stops the container gracefully (its init wrote the marker), leaves no
#    process in its cgroup; `systemctl start cmld` brings the service back.
c_service_stop() {
  pid=$(cat /run/vmlab/demo.pid)
  expect_state demo RUNNING
  [ -d "/proc/$pid" ] || die "the container's init (pid $pid) does not run"
  cg=$(cgroup_of "$pid")
  cmld=$(main_pid)
  svc=$(cgroup_of "$cmld")
  echo "init pid $pid in $cg; cmld pid $cmld in $svc"
  systemctl stop cmld.service || die "systemctl stop cmld failed ($?)"
  [ "$(systemctl is-active cmld.service)" != active ] || die "cmld.service is still active"
  # KillMode=process: systemd signals cmld only; what cmld started must have ended with it.
  if [ -d "$svc" ] && [ -n "$(cat "$svc/cgroup.procs")" ]; then
    die "processes left in cmld.service's cgroup after the stop: $(for p in $(cat "$svc/cgroup.procs"); do printf '%s(%s) ' "$p" "$(cat "/proc/$p/comm" 2>/dev/null)"; done)"
  fi
  [ ! -d "/proc/$pid" ] || die "the container's init (pid $pid) survived systemctl stop cmld"
  if [ -d "$cg" ]; then
    procs=$(cat "$cg/cgroup.procs")
    [ -z "$procs" ] || die "processes left in $cg: $procs"
    echo "$cg remains, empty"
  else
    echo "$cg is removed"
  fi
  journal_of "$cmld" | tail -n 6
  journal_of "$cmld" | grep 'containers stopped' ||
    die "cmld did not log stopping the containers: $(journal_of "$cmld" | tail -n 4 | one_line)"
  systemctl start cmld.service || die "systemctl start cmld failed ($?)"
  wait_answers
  expect_state demo STOPPED
  ctl_ok start demo --key=$PIN
  expect_state demo RUNNING
  init_pid demo > /run/vmlab/demo.pid
  marks=$(stop_marks)
  [ "$marks" = 2 ] || die "the stop-marker has $marks lines, not 2: the container did not get SIGTERM at systemctl stop cmld ($(crun demo 'cat /data/stop-marker' | one_line))"
}

# 7. Removal keeps the data; purge removes the configuration without asking.
c_remove() {
  apt_ remove -y cml || die "apt remove cml failed ($?)"
  v=$(installed_version)
  case $v in *"config-files"*) ;; *) die "dpkg-query says '$v' after remove" ;; esac
  [ ! -e /usr/sbin/cmld ] || die "/usr/sbin/cmld is still there"
  [ "$(systemctl is-active cmld.service)" != active ] || die "cmld.service still runs after the removal"
  pid=$(cat /run/vmlab/demo.pid)
  [ ! -d "/proc/$pid" ] || die "the container's init (pid $pid) still runs after the removal"
  [ -d /var/lib/cml ] || die "/var/lib/cml is gone after remove"
  find /var/lib/cml -maxdepth 2 | sort
  [ -n "$(find /var/lib/cml -maxdepth 3 -path '*containers*' -print -quit)" ] || die "no containers under /var/lib/cml after remove"
  [ -e /etc/default/cmld ] || die "remove took /etc/default/cmld (a conffile stays until purge)"
}

c_purge() {
  out=$(apt_ purge -y cml 2>&1) || die "apt purge cml failed ($?): $(echo "$out" | tail -n 3 | one_line)"
  echo "$out"
  v=$(installed_version || true)
  case $v in "" | *"not-installed"*) ;; *) die "dpkg-query says '$v' after purge" ;; esac
  [ ! -e /etc/default/cmld ] || die "/etc/default/cmld is still there after purge"
  if [ -d /var/lib/cml ]; then
    find /var/lib/cml -maxdepth 2 | sort
    # Its entries, a directory with the number of entries in it: `containers/(6) device.conf …`.
    left=$(cd /var/lib/cml && for e in * .[!.]*; do
      [ -e "$e" ] || continue
      if [ -d "$e" ]; then printf '%s/(%s) ' "$e" "$(find "$e" -mindepth 1 -maxdepth 1 | wc -l)"; else printf '%s ' "$e"; fi
    done)
    report "VMLAB info purge_kept=/var/lib/cml: $left"
    echo "$out" | grep -q /var/lib/cml || die "purge kept /var/lib/cml and said nothing about it"
  else
    report "VMLAB info purge_kept=nothing"
  fi
}

report "VMLAB info packages old=$V_OLD new=$V_NEW"
timed apt-install c_apt_install
timed service-up c_service_up
timed demo-flow c_demo_flow
if [ -s /run/vmlab/demo.pid ]; then
  timed restart-adopts c_restart_adopts
  timed upgrade-adopts c_upgrade
  timed stop-start-after-upgrade c_stop_start_after_upgrade
  timed service-stop-graceful c_service_stop
else
  for c in restart-adopts upgrade-adopts stop-start-after-upgrade service-stop-graceful; do
    skip "$c" "no running container (demo-flow failed)"
  done
fi
timed remove-keeps-data c_remove
timed purge c_purge
