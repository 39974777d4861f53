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
    sys.exit(f"Missing Python package '{missing.name}'. Install the project first: pip install -e .")

if __name__ == "__main__":
    main()
