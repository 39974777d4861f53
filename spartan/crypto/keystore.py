"""Keeps a user's private keys on disk, readable by nobody but their owner.

An identity file is a small JSON document (`<user>.json`) holding the user name
and the two 32-byte private seeds. It lives in `~/.spartan/keys/` unless a
directory is passed or `SPARTAN_KEY_DIR` names one. Files are written with mode
0600 inside a 0700 directory, atomically (temporary file + rename/link), and a
file that other users could read is refused rather than silently used: a leaked
private key is a stolen account.

`private_file_dir`, `write_private_file` and `read_private_file` are also used
by `spartan.crypto.pins` for the pinned-keys file next to the identity.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import tempfile
from pathlib import Path

from spartan.crypto.identity import Identity
from spartan.errors import FailedPrecondition, InvalidArgument

KEY_DIR_ENV = "SPARTAN_KEY_DIR"
DEFAULT_KEY_DIR = Path("~/.spartan/keys")
FILE_FORMAT = "spartan-identity-v1"
_SAFE_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$")


class KeyStoreError(FailedPrecondition):
    """An identity or pin file is missing, unreadable, corrupt or not private enough."""


def key_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Where key files live: the argument, else `$SPARTAN_KEY_DIR`, else `~/.spartan/keys`."""
    if directory is not None:
        return Path(directory).expanduser()
    from_env = os.environ.get(KEY_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return DEFAULT_KEY_DIR.expanduser()


def _check_user(user: str) -> str:
    if not _SAFE_USER.match(user):
        raise InvalidArgument(f"user name {user!r} cannot be used as a key file name")
    return user


def key_path(user: str, directory: str | os.PathLike[str] | None = None) -> Path:
    return key_dir(directory) / f"{_check_user(user)}.json"


def private_file_dir(path: Path) -> None:
    """Create the parent directory of `path` as 0700 (and tighten it if it is ours and looser)."""
    parent = path.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = parent.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(parent, 0o700)


def write_private_file(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Atomically write `data` to `path` with mode 0600.

    With `replace=False` an existing file is left alone and False is returned
    (so two processes creating the same identity at once agree on one of them).
    """
    private_file_dir(path)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temp_name, path)
            return True
        try:
            os.link(temp_name, path)
        except FileExistsError:
            return False
        return True
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def read_private_file(path: Path) -> bytes:
    """Read a file that must belong to us and be inaccessible to group and others."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyStoreError(f"no key file at {path}") from None
    except OSError as error:
        raise KeyStoreError(f"cannot open key file {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise KeyStoreError(
                f"key file {path} has mode {mode:04o}, so other users may read it; "
                f"it must be readable only by its owner (run: chmod 600 {path})"
            )
        if info.st_uid != os.getuid():
            raise KeyStoreError(f"key file {path} belongs to uid {info.st_uid}, not to you")
        return handle.read()


def _encode(identity: Identity) -> bytes:
    signing_seed, agreement_seed = identity.private_seeds()
    document = {
        "format": FILE_FORMAT,
        "user": identity.user,
        "ed25519_seed": base64.b64encode(signing_seed).decode("ascii"),
        "x25519_seed": base64.b64encode(agreement_seed).decode("ascii"),
        "identity_key": identity.identity_key.hex(),
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _decode(path: Path, raw: bytes, user: str) -> Identity:
    try:
        document = json.loads(raw)
        if document.get("format") != FILE_FORMAT:
            raise ValueError(f"unknown format {document.get('format')!r}")
        identity = Identity(
            document["user"],
            base64.b64decode(document["ed25519_seed"], validate=True),
            base64.b64decode(document["x25519_seed"], validate=True),
        )
    except (ValueError, KeyError, TypeError, AttributeError, InvalidArgument) as error:
        raise KeyStoreError(f"key file {path} is corrupt: {error}") from None
    if identity.user != user:
        raise KeyStoreError(f"key file {path} holds the keys of {identity.user}, not of {user}")
    recorded = document.get("identity_key")
    if recorded is not None and recorded != identity.identity_key.hex():
        raise KeyStoreError(f"key file {path} is corrupt: its identity key does not match its seed")
    return identity


def save(identity: Identity, directory: str | os.PathLike[str] | None = None) -> Path:
    """Write (or overwrite) the identity file; returns its path."""
    path = key_path(identity.user, directory)
    write_private_file(path, _encode(identity))
    return path


def load(user: str, directory: str | os.PathLike[str] | None = None) -> Identity:
    """Read the identity of `user`; `KeyStoreError` if missing, corrupt or not private."""
    path = key_path(user, directory)
    return _decode(path, read_private_file(path), user)


def load_or_create(user: str, directory: str | os.PathLike[str] | None = None) -> tuple[Identity, bool]:
    """The identity of `user`, generating and saving a new one on first use.

    Returns `(identity, created)`. Safe against two processes racing to create it.
    """
    path = key_path(user, directory)
    if not path.exists():
        fresh = Identity.generate(user)
        if write_private_file(path, _encode(fresh), replace=False):
            return fresh, True
    return _decode(path, read_private_file(path), user), False
