#!/usr/bin/env bash
# Install what Spartan Messenger needs on a Debian/Ubuntu machine, once: system packages
# (redis-server for the local stack; nginx, prometheus, tmux and faketime for the test
# suite) and the Python package itself with its extras. Safe to run again.
# Usage: bash scripts/bootstrap.sh [--for-tests]
set -euo pipefail
cd "$(dirname "$0")/.."

want=(redis-server)
python3 -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
if [[ "${1:-}" == "--for-tests" ]]; then
  want+=(nginx prometheus tmux faketime)
fi
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
[[ "${1:-}" == "--for-tests" ]] && extras="test,bench"
source scripts/python.sh
"$PROJECT_PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
