# Sourced by the other scripts (which cd to the project first). Sets
#   PROJECT_PYTHON        the interpreter the project runs with (absolute path)
#   PROJECT_PYTHON_SHOWN  how the user types it from the project folder: python3 or .venv/bin/python
# and puts that interpreter's scripts folder first on PATH, so everything the scripts run
# (pytest and the tools the tests call: check-jsonschema, kubernetes-validate, spartan-*)
# comes from the same environment as the project.
# spartan/setup_hint.py chooses the route; the programs' "set up first" hints use the same rule.
if ! command -v python3 >/dev/null; then
  echo "Spartan Messenger needs python3 (3.11 or newer): sudo apt-get install python3" >&2
  exit 1
fi
route=$(python3 spartan/setup_hint.py route)
if [[ $route == venv ]]; then
  # A .venv without a working pip (left half made, e.g. before python3-venv was installed,
  # or by a Python that has since been removed) is made again.
  if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    rm -rf .venv
    python3 -m venv .venv
  fi
  PROJECT_PYTHON=$PWD/.venv/bin/python
  PROJECT_PYTHON_SHOWN=.venv/bin/python
else
  PROJECT_PYTHON=$(python3 -c 'import sys; print(sys.executable)')
  PROJECT_PYTHON_SHOWN=python3
fi
PATH="$("$PROJECT_PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
