"""The passphrase of a protected key file: where the client gets it, and `--set-passphrase`.

Asked only when the key file is protected (`spartan.crypto.keystore`), so scripts with
unprotected keys run as before. Sources, first that applies: `--passphrase-file FILE`
(its first line), `SPARTAN_PASSPHRASE`, else the terminal asks without echo. A script
with neither gets one sentence saying how to pass it. `client.py alice --set-passphrase`
adds, changes or removes the passphrase: the new one comes from `SPARTAN_NEW_PASSPHRASE`
(empty removes it) or is typed twice at the terminal (empty removes it).
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from spartan.crypto.keystore import KeyStoreError, key_path, load_or_create, save

PASSPHRASE_ENV = "SPARTAN_PASSPHRASE"
NEW_PASSPHRASE_ENV = "SPARTAN_NEW_PASSPHRASE"


class PassphraseUnavailable(KeyStoreError):
    """No passphrase could be obtained (no terminal, no variable, unreadable file, or two that differ)."""


def _first_line(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PassphraseUnavailable(f"cannot read the passphrase file {path}: {exc.strerror or exc}") from None
    line = text.splitlines()[0] if text else ""
    if not line:
        raise PassphraseUnavailable(f"the passphrase file {path} is empty")
    return line


def interactive() -> bool:
    return sys.stdin.isatty()


def passphrase_source(user: str, key_dir: str | None, passphrase_file: str | None) -> Callable[[], str]:
    """What the key store calls when (and only when) the key file of `user` is protected."""

    def ask() -> str:
        if passphrase_file:
            return _first_line(passphrase_file)
        from_env = os.environ.get(PASSPHRASE_ENV)
        if from_env:
            return from_env
        if interactive():
            typed = getpass.getpass(f"Passphrase for {user}'s key: ")
            if typed:
                return typed
        raise PassphraseUnavailable(
            f"the key file of {user} ({key_path(user, key_dir)}) is protected by a passphrase; "
            f"type it at a terminal, or pass it with {PASSPHRASE_ENV} or --passphrase-file FILE"
        )

    return ask


def new_passphrase(user: str) -> str:
    """The passphrase to protect the key with from now on; empty means none."""
    if NEW_PASSPHRASE_ENV in os.environ:
        return os.environ[NEW_PASSPHRASE_ENV]
    if not interactive():
        raise PassphraseUnavailable(
            f"--set-passphrase reads the new passphrase from a terminal or from {NEW_PASSPHRASE_ENV} "
            "(empty removes it); neither is available"
        )
    first = getpass.getpass(f"New passphrase for {user}'s key (empty: none): ")
    if getpass.getpass("The same again: ") != first:
        raise PassphraseUnavailable("the two passphrases differ; nothing was changed")
    return first


def set_passphrase(user: str, key_dir: str | None, passphrase_file: str | None) -> str:
    """Unlock the key with the current passphrase (if any), then write it under the new one; returns what happened."""
    identity, _ = load_or_create(user, key_dir, passphrase=passphrase_source(user, key_dir, passphrase_file))
    new = new_passphrase(user)
    path = save(identity, key_dir, passphrase=new or None)
    if new:
        return f"The key file of {user} ({path}) is now protected by the new passphrase."
    return f"The key file of {user} ({path}) is no longer protected by a passphrase."
