#!/usr/bin/env bash
# System packages the test suite drives for real: headless Chromium, Redis, nginx, and the
# PostgreSQL server when its binaries (initdb, pg_ctl) are neither on PATH nor in /usr/lib/postgresql.
set -euo pipefail
need=()
# CHROMIUM: a Chromium binary of one's own (on Ubuntu the chromium package only installs a snap).
[ -x "${CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing test system packages: ${need[*]}"
# The tests start their own servers on loopback: the packages' services are not started by the install (an
# nginx whose port 80 is taken would fail it) nor left enabled at boot.
policy=/usr/sbin/policy-rc.d
own_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ -n "$own_policy" ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for unit in nginx redis-server postgresql; do
    for pkg in "${need[@]}"; do
      if [ "$pkg" = "$unit" ]; then $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true; fi
    done
  done
fi
