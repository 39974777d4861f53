#!/usr/bin/env bash
# Install what Spartan Messenger needs on a Debian/Ubuntu machine, once: system packages
# (redis-server for the local stack; nginx, prometheus, tmux and faketime for the test
# suite) and the Python package itself with its extras. Safe to run again.
# Usage: bash scripts/bootstrap.sh [--for-tests] [--quiet]
#   --quiet: no closing "what to run next" lines (scripts/serve and scripts/test say their own)
set -euo pipefail
from=$PWD
cd "$(dirname "$0")/.."
for_tests=false quiet=false
for arg in "$@"; do
  case $arg in
    --for-tests) for_tests=true ;;
    --quiet) quiet=true ;;
    *) echo "usage: bash scripts/bootstrap.sh [--for-tests] [--quiet]" >&2; exit 2 ;;
  esac
done

want=(redis-server)
# Debian's python3 makes virtual environments only with python3-venv (it ships ensurepip).
python3 -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
$for_tests && want+=(nginx prometheus tmux faketime)
missing=()
for pkg in "${want[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  echo "Installing system packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start their daemons; the project runs its own instances.
for svc in nginx prometheus; do
  if command -v service >/dev/null && service "$svc" status >/dev/null 2>&1; then
    service "$svc" stop >/dev/null 2>&1 || true
  fi
done

extras="bench"
$for_tests && extras="test,bench,check"
source scripts/python.sh
"$PROJECT_PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"

if ! $quiet; then
  go=""
  [[ $from != "$PWD" ]] && go="cd $PWD && "
  echo "Set up with $PROJECT_PYTHON_SHOWN. Start the server: ${go}bash scripts/serve (or $PROJECT_PYTHON_SHOWN server.py)"
  echo "Then chat from another terminal: ${go}$PROJECT_PYTHON_SHOWN client.py alice"
fi
