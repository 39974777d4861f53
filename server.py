#!/usr/bin/env python3
"""Run the whole Spartan Messenger stack on this machine: `python3 server.py [--gateways N]`.

See spartan/launcher.py; `python3 server.py --help` lists the options.
"""
from __future__ import annotations

import sys

if sys.version_info < (3, 11):
    sys.exit("Spartan Messenger needs Python 3.11 or newer.")

try:
    from spartan.launcher import main
except ModuleNotFoundError as missing:
    from spartan.setup_hint import missing_package  # standard library only: works before set-up
    sys.exit(missing_package(missing.name or "?", sys.argv, setup=["scripts/serve", *sys.argv[1:]]))

if __name__ == "__main__":
    main()
