"""Which Python runs the project on this machine, and what to tell someone whose Python lacks it.

The rule (PEP 668): an active virtual environment is used as it is; a Python that is
externally managed (Debian's own python3) or whose site-packages this user cannot write
gets a project virtual environment in `.venv`; any other Python (pyenv, a python.org
build) gets the project installed into it.

Standard library only, and runnable as a file: `scripts/python.sh` asks it for the route
(`python3 spartan/setup_hint.py route`) and client.py, server.py and `python3 -m bench`
use it for their "set up first" sentence, so the scripts and the hints always agree.
"""

from __future__ import annotations

import os
import shlex
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
MINIMUM = (3, 11)


def in_virtualenv() -> bool:
    return sys.prefix != sys.base_prefix


def needs_project_venv() -> bool:
    """True when pip must not (PEP 668) or cannot install into this Python."""
    if in_virtualenv():
        return False
    if (Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists():
        return True
    return not os.access(sysconfig.get_path("purelib"), os.W_OK)


def shown(path: Path) -> str:
    """A path as the user would type it from where they are: relative below the current folder."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def runs_from_project_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV_PYTHON.parent.parent.resolve()


def venv_has(module: str) -> bool:
    """Whether .venv exists and can import `module` (the project is set up there)."""
    if not VENV_PYTHON.exists():
        return False
    import subprocess

    return subprocess.run([str(VENV_PYTHON), "-c", f"import {module}"], cwd=ROOT, capture_output=True).returncode == 0


def missing_package(module: str, run: list[str], *, setup: list[str] | None = None) -> str:
    """One sentence: `module` is missing here, and the commands that work on this machine.

    `run` is what follows the interpreter as the user typed it (sys.argv, or ["-m", "bench", ...]);
    `setup` replaces "set up, then run" with one script that does both (scripts/serve)."""
    top = module.split(".")[0]
    what = (
        "The project is not installed in this Python (its generated protobuf code is missing)"
        if top in ("spartan", "services")
        else f"Missing Python package '{top}'"
    )
    if not runs_from_project_venv() and venv_has(module):
        return f"{what}, but the project is set up in .venv: run {shlex.join([shown(VENV_PYTHON), *run])}"
    python = shown(VENV_PYTHON) if needs_project_venv() or runs_from_project_venv() else "python3"
    if setup:
        script = shlex.join(["bash", shown(ROOT / setup[0]), *setup[1:]])
        return f"{what}. Set it up and start with {script} (afterwards {shlex.join([python, *run])} is enough)"
    bootstrap = shlex.join(["bash", shown(ROOT / "scripts" / "bootstrap.sh")])
    return f"{what}. Set the project up first with {bootstrap}, then run {shlex.join([python, *run])}"


def main(argv: list[str]) -> int:
    if argv != ["route"]:
        print("usage: python3 spartan/setup_hint.py route", file=sys.stderr)
        return 2
    if sys.version_info < MINIMUM:
        print(
            f"Spartan Messenger needs Python {'.'.join(map(str, MINIMUM))} or newer; python3 here is "
            f"{sys.version.split()[0]}. Install a newer one (e.g. sudo apt-get install python3.11) "
            "or activate an environment that has it.",
            file=sys.stderr,
        )
        return 1
    print("venv" if needs_project_venv() else "current")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
