#!/usr/bin/env bash
# The VM lab's GuestOSes, built and signed on the host with the real cml-guestos, as
# tests/common/fixture.rs builds the test suite's: a busybox root (every applet linked), a
# development PKI, `cml-guestos build` into a store whose update_base_url is where the VM sees it
# (file:///vmlab/store), and `cml-guestos sign`.
#   hosted: busybox-1  squashfs root, tmpfs /data; init runs $INIT (eval) first, then waits; exits
#                      on SIGTERM (the test suite's INIT_SCRIPT)
#           bbext4-1   the same with an ext4 root: squashfs cannot be idmapped before Linux 6.2,
#                      and the VM runs Debian 12's 6.1, so the user-namespace container uses this
#           bbdata-1   squashfs root, persistent ext4 /data (made by cmld at the first start)
#   debian: none (the Debian fixture, scripts/debian-fixture.sh, on a disk of its own)
#   device: keeper-1   squashfs root, persistent ext4 /data; on SIGTERM its init writes
#                      /data/stop-marker, syncs and exits; /bin/escape-probe (tries to leave the
#                      container's root); plus keeper.conf and probe.conf, container configs
#                      signed with the same PKI (the device scenario runs with signed_configs: true)
#   install: keeper-1  as for device, but its init appends a line to /data/stop-marker at its stop
#                      (the first SIGTERM); plus demo.conf(.sig), a signed config of a SOFT-token
#                      container `demo` of it (as config/containers/demo.conf: the device token's
#                      PIN, an encrypted /data)
# Usage: scripts/vm/guestos.sh CML_GUESTOS BUSYBOX WORK_DIR VMLAB_DIR SCENARIO
# Writes VMLAB_DIR/pki/{root-ca,signing}.cert, VMLAB_DIR/store/…, and for device VMLAB_DIR/{keeper,probe}.conf(.sig),
# for install VMLAB_DIR/demo.conf(.sig).
set -euo pipefail
tool=${1:?usage}
busybox=${2:?usage}
w=${3:?usage}
out=${4:?usage}
scenario=${5:?usage}
mkdir -p "$w" "$out/pki"
"$tool" dev-pki "$w/pki" >/dev/null
cp "$w/pki/root-ca.cert" "$w/pki/signing.cert" "$out/pki/"

rootfs=$w/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/data" "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for a in $("$busybox" --list); do
  [ -e "$rootfs/bin/$a" ] || ln -s busybox "$rootfs/bin/$a"
done
: > "$rootfs/etc/resolv.conf"   # for cmld to bind the DNS server onto (the root is read-only)
printf 'root:x:0:0:root:/:/bin/sh\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\n' > "$rootfs/etc/group"

build() { # NAME INIT_SCRIPT ARGS…
  local name=$1 init=$2
  shift 2
  "$tool" build --rootfs "$rootfs" --name "$name" --version 1 --out "$out/store" \
    --init /bin/sh --init-param -c --init-param "$init" \
    --update-base-url file:///vmlab/store "$@" >/dev/null
  "$tool" sign "$out/store/$name-1.conf" --key "$w/pki/signing.key" --cert "$w/pki/signing.cert" >/dev/null
}

case $scenario in
  hosted)
    init="trap 'exit 0' TERM; if [ -n \"\$INIT\" ]; then eval \"\$INIT\"; fi; echo ready; while :; do sleep 3600 & wait; done"
    build busybox "$init"
    build bbext4 "$init" --root-fs ext4
    build bbdata "$init" --data-fs ext4 --data-size 16
    ;;
  device)
    cat > "$rootfs/bin/escape-probe" <<'PROBE'
#!/bin/sh
# Run inside a container: tries to leave its root the classic ways; after each `== NAME` line, the
# listing of the root directory it reached (the container's own, if the root switch holds).
jail=/data/jail
mkdir -p "$jail/bin" && cp /bin/busybox "$jail/bin/busybox" || exit 1
echo "== dotdot"
cd / && cd ../../../.. && ls -a .
echo "== proc-1-root"
ls -a /proc/1/root/
echo "== fd-outside-jail"
# busybox nsenter opens -w's directory before it chroots into -r's, and fchdir()s to it after: a
# process in a jail holding a directory outside it. From there `..` as far as it goes, then a
# chroot into wherever that is.
busybox nsenter -r"$jail" -w/ /bin/busybox sh -c 'cd ../../../../..; exec /bin/busybox chroot . /bin/busybox ls -a /'
echo "== end"
PROBE
    chmod +x "$rootfs/bin/escape-probe"
    init="trap 'echo \"stopped by SIGTERM at \$(date)\" > /data/stop-marker; sync; exit 0' TERM; echo ready; while :; do sleep 3600 & wait; done"
    build keeper "$init" --data-fs ext4 --data-size 16
    cat > "$out/keeper.conf" <<'CONF'
name: "keeper"
guest_os: "keeper"
guestos_version: 1
color: 1
token_type: NONE
userns: false
netns: false
CONF
    sed '1s/.*/name: "probe"/' "$out/keeper.conf" > "$out/probe.conf"
    for c in keeper probe; do
      "$tool" sign "$out/$c.conf" --key "$w/pki/signing.key" --cert "$w/pki/signing.cert" >/dev/null
    done
    ;;
  install)
    # cmld repeats the stop signal until the init exits (1 ms, 2, 4, … apart), and a handler's
    # `sync` may outlast a gap: the handler first ignores further ones, so it writes once. No
    # command substitution in it: a forked subshell would inherit the trap.
    init="trap 'trap \"\" TERM; read -r up _ < /proc/uptime; echo \"stopped by SIGTERM at uptime \$up\" >> /data/stop-marker; sync; exit 0' TERM; echo ready; while :; do sleep 3600 & wait; done"
    build keeper "$init" --data-fs ext4 --data-size 16
    cat > "$out/demo.conf" <<'CONF'
name: "demo"
guest_os: "keeper"
guestos_version: 1
color: 0x3366ffff
token_type: SOFT
netns: false
CONF
    "$tool" sign "$out/demo.conf" --key "$w/pki/signing.key" --cert "$w/pki/signing.cert" >/dev/null
    ;;
  debian) ;; # the Debian fixture's store comes on a disk (scripts/vm-lab.sh)
  *) echo "vm/guestos: unknown scenario $scenario" >&2; exit 2 ;;
esac
