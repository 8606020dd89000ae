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
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
