#!/usr/bin/env bash
# The main job for a new user: build cml, bring cmld up on its default paths (/var/lib/cml,
# /run/socket/cml-control, /run/cml) with its default device.conf (signatures required), build a
# busybox GuestOS with cml-guestos, sign it with a development PKI, register the PKI's CA, push the
# GuestOS, create a signed container of it, start it, show its state and run a command in it.
#
# Build products and the development PKI live in target/demo/ of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ "$(id -u)" = 0 ] || { echo "demo.sh: cmld runs as root; run as root" >&2; exit 1; }
cargo build --release --locked --bins
BIN=$PWD/target/release
W=$PWD/target/demo
SOCK=/run/socket/cml-control
control() { "$BIN/control" -s "$SOCK" "$@"; }
mkdir -p "$W"

# 1. A root filesystem: Debian's static busybox and its applet links.
if [ ! -x "$W/rootfs/bin/busybox" ]; then
  mkdir -p "$W/rootfs/bin"
  cp /bin/busybox "$W/rootfs/bin/busybox"
  for a in sh ls cat echo sleep ps mount hostname id env kill reboot; do ln -sf busybox "$W/rootfs/bin/$a"; done
fi
# 2. A development PKI, the GuestOS (image + config, laid out as an update store), its signature.
[ -e "$W/pki/root-ca.cert" ] || "$BIN/cml-guestos" dev-pki "$W/pki"
if [ ! -e "$W/store/demo-busybox-1.conf.sig" ]; then
  "$BIN/cml-guestos" build --rootfs "$W/rootfs" --name demo-busybox --version 1 --out "$W/store" \
    --init /bin/sh --init-param -c --init-param "trap 'exit 0' TERM; while :; do sleep 3600 & wait; done" \
    --data-fs ext4 --data-size 16 --update-base-url "file://$W/store"
  "$BIN/cml-guestos" sign "$W/store/demo-busybox-1.conf" --key "$W/pki/signing.key" --cert "$W/pki/signing.cert"
fi
"$BIN/cml-guestos" sign config/containers/demo.conf --key "$W/pki/signing.key" --cert "$W/pki/signing.cert" \
  --out "$W/demo.conf.sig"

# 3. The daemon, on its defaults.
if ! control list >/dev/null 2>&1; then
  nohup "$BIN/cmld" >>/var/log/cmld-demo.log 2>&1 &
  echo "demo: cmld started (pid $!, log /var/log/cmld-demo.log); stop it with: kill $!" >&2
  for _ in $(seq 100); do control list >/dev/null 2>&1 && break; sleep 0.1; done
fi

# 4. Trust the PKI, install the GuestOS, create the container.
control ca_register "$W/pki/root-ca.cert"
control push_guestos_config "$W/store/demo-busybox-1.conf" "$W/store/demo-busybox-1.conf.sig" "$W/pki/signing.cert"
control list_guestos
if ! control state demo >/dev/null 2>&1; then
  control create config/containers/demo.conf "$W/demo.conf.sig" "$W/pki/signing.cert" >/dev/null
fi
# The device token still has its default PIN, trustme.
[ "$(control state demo)" = RUNNING ] || control start demo --key=trustme
control list
echo "state of demo: $(control state demo)"
echo "\$ control run demo nopty sh -c 'echo hostname: \$(hostname); echo pid 1: \$(cat /proc/1/comm); ls /'"
control run demo nopty sh -c 'echo hostname: $(hostname); echo pid 1: $(cat /proc/1/comm); ls /'

# 5. The web UI: cml-web on 127.0.0.1:8086, a client of the same socket. Its first password is
# random, made once and kept (0600) in target/demo/web.password; change it with `cml-web passwd`.
WEB_URL=http://127.0.0.1:8086/
if [ ! -s "$W/web.password" ]; then
  (umask 077; openssl rand -base64 15 | tr -d '\n' >"$W/web.password")
  "$BIN/cml-web" passwd --file "$W/web.passwd" <"$W/web.password"
fi
if ! curl -fsS -o /dev/null "${WEB_URL}api/openapi.json" 2>/dev/null; then
  nohup "$BIN/cml-web" --socket "$SOCK" --password-file "$W/web.passwd" >>/var/log/cml-web-demo.log 2>&1 &
  echo "demo: cml-web started (pid $!, log /var/log/cml-web-demo.log); stop it with: kill $!" >&2
  for _ in $(seq 100); do curl -fsS -o /dev/null "${WEB_URL}api/openapi.json" 2>/dev/null && break; sleep 0.1; done
fi
echo "demo: web UI at $WEB_URL — password: $(cat "$W/web.password") (kept in $W/web.password)"
echo "demo: from another machine: ssh -L 8086:127.0.0.1:8086 root@<this host>, then open $WEB_URL" >&2
echo "demo: the container keeps running; stop it with: $BIN/control stop demo (PIN: trustme)" >&2
echo "demo: its /data is encrypted under the device token, whose PIN is still the default:" >&2
echo "demo: change it now with: $BIN/control change_pin demo" >&2
