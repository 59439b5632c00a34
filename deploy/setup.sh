#!/usr/bin/env bash
# Sets logpipe up on a Debian machine, then runs the agent (`run`) or the test suite (`test`).
#   bash deploy/setup.sh run [logpipe run options]   # the agent on its embedded default
#   bash deploy/setup.sh test [pytest options]       # the whole test suite
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
shift || true

# Debian packages: a compiler and libsystemd headers for systemd-python, the journal writer
# the journal tests use, and the Prometheus server the metrics tests scrape with.
debs=(python3-venv python3-dev gcc pkg-config libsystemd-dev systemd-journal-remote prometheus)
missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: not root, so not installing Debian packages: ${missing[*]}" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi

case "$mode" in
  run)  exec .venv/bin/logpipe run "$@" ;;
  test) exec .venv/bin/python -m pytest -q "$@" ;;
  *)    echo "usage: bash deploy/setup.sh run|test [options]" >&2; exit 2 ;;
esac
