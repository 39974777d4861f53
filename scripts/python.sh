# Sourced by the other scripts: sets PROJECT_PYTHON (not exported) to the interpreter the project runs with.
# The current Python (or active virtual environment) when pip may install into it; a project
# virtual environment in .venv when the system Python is externally managed (PEP 668, e.g.
# Debian's python3), created on first use.
if [[ -n "${VIRTUAL_ENV:-}" ]] || ! python3 - <<'PY'
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)
PY
then
  PROJECT_PYTHON=python3
else
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  PROJECT_PYTHON=.venv/bin/python
fi
