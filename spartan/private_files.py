"""Files and directories only their owner may read, created with that mode from the start.

Secrets, logs and Redis's data must never exist, even for a moment, with a mode that
lets other local users read them: a `chmod` after writing leaves a window in which the
file is world-readable (and is skipped entirely when the process dies in between).
Everything here passes the final mode to the system call that creates the file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600
PRIVATE_UMASK = 0o077  # for child processes (redis-server) that create files of their own


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) with mode 0700; an existing directory is narrowed to 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(DIR_MODE)  # made by an older version, before anything secret goes into it
    return path


def open_private_append(path: Path) -> BinaryIO:
    """Open a log for appending; created 0600 (an existing file keeps its content, its mode is narrowed)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "ab")


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """The secret kept in `path`, generated once (exclusive creation, mode 0600) when there is none."""
    try:
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text
        path.unlink()  # an empty file left by an interrupted start
    except FileNotFoundError:
        pass
    secret = secrets.token_hex(nbytes)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:  # another start won the race: use its secret
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret
