"""The name and version every command line shows: `spartan-server` when installed, `server.py` from a checkout.

`--help` and error lines name the command the user actually typed, and `--version`
answers the same way for every program.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "spartan-messenger"


def program_name(script: str) -> str:
    """`spartan-…` when started through its installed command, else `script` (e.g. `server.py`)."""
    typed = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return typed if typed.startswith("spartan-") else script


def project_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "(not installed)"


def argument_parser(script: str, description: str) -> argparse.ArgumentParser:
    """An ArgumentParser named after the command as typed, with `--version`."""
    prog = program_name(script)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {project_version()}")
    return parser
