#!/usr/bin/env bash
# The main job for a new user: build, bring cmld up on its default paths (/var/lib/cml,
# /run/socket/cml-control, /run/cml), install the demo GuestOS, create a container and show it.
#
# This is a development setup: on a data directory that has no device.conf yet it writes one with
# signed_configs: false. An existing device.conf is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ "$(id -u)" = 0 ] || { echo "demo.sh: cmld runs as root; run as root" >&2; exit 1; }
cargo build --release --locked --bins
BIN=$PWD/target/release
DATA=/var/lib/cml
SOCK=/run/socket/cml-control
control() { "$BIN/control" -s "$SOCK" "$@"; }

mkdir -p "$DATA"
if [ ! -e "$DATA/device.conf" ]; then
  install -m 0600 config/device-dev.conf "$DATA/device.conf"
  echo "demo: wrote a development device.conf (signed_configs: false) to $DATA" >&2
fi

# The demo GuestOS. Until the GuestOS manager can push signed GuestOSes, its config is placed
# into the store directly.
GOS="$DATA/operatingsystems/demo-busybox-1"
mkdir -p "$GOS"
install -m 0644 config/guestos/demo-busybox-1.conf "$GOS/demo-busybox-1.conf"

if ! control list >/dev/null 2>&1; then
  mkdir -p /var/log
  nohup "$BIN/cmld" >>/var/log/cmld-demo.log 2>&1 &
  echo "demo: cmld started (pid $!, log /var/log/cmld-demo.log); stop it with: kill $!" >&2
  for _ in $(seq 100); do control list >/dev/null 2>&1 && break; sleep 0.1; done
  control reload   # picks up the GuestOS placed above if cmld was already configured
else
  control reload
fi

control list_guestos
if ! control state demo >/dev/null 2>&1; then
  control create config/containers/demo.conf >/dev/null
fi
uuid=$(control --json state demo | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
control list
echo "state of $uuid: $(control state "$uuid")"
