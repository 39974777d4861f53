#!/usr/bin/env python3
"""Chat as a user: `python3 client.py alice [--server host:port[,host:port...]]`.

See spartan/client/cli.py; `python3 client.py --help` lists the options.
"""
from __future__ import annotations

import sys

if sys.version_info < (3, 11):
    sys.exit("Spartan Messenger needs Python 3.11 or newer.")

try:
    from spartan.client.cli import main
except ModuleNotFoundError as missing:
    from spartan.setup_hint import missing_package  # standard library only: works before set-up
    sys.exit(missing_package(missing.name or "?", sys.argv))

if __name__ == "__main__":
    main()
