"""Keeps a user's private keys on disk, readable by nobody but their owner.

An identity file is a small JSON document (`<user>.json`) holding the user name
and the two 32-byte private seeds. It lives in `~/.spartan/keys/` unless a
directory is passed or `SPARTAN_KEY_DIR` names one. Files are written with mode
0600 inside a 0700 directory, atomically (temporary file + rename/link), and a
file that other users could read is refused rather than silently used: a leaked
private key is a stolen account.

A file may instead hold the seeds wrapped under a passphrase
(`spartan.crypto.passphrase`: scrypt, then AES-256-GCM; format
`spartan-identity-v1-passphrase`): then the bytes on disk hold no seed, and loading
asks the caller's `passphrase` callback, only for such a file, so unprotected files
load exactly as before. `save(..., passphrase=...)` adds, changes or (with None)
removes the protection; a wrong passphrase changes nothing.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spartan.crypto import passphrase as wrapping
from spartan.crypto.identity import KEY_BYTES, Identity
from spartan.errors import FailedPrecondition, InvalidArgument

KEY_DIR_ENV = "SPARTAN_KEY_DIR"
DEFAULT_KEY_DIR = Path("~/.spartan/keys")
FILE_FORMAT = "spartan-identity-v1"
PROTECTED_FORMAT = "spartan-identity-v1-passphrase"
Passphrase = Callable[[], str]  # asked only when the file is protected
_SAFE_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$")


class KeyStoreError(FailedPrecondition):
    """An identity or pin file is missing, unreadable, corrupt or not private enough."""


class PassphraseRequired(KeyStoreError):
    """The key file is protected by a passphrase and the caller gave no way to ask for it."""


class WrongPassphrase(KeyStoreError):
    """The passphrase given does not unlock the key file (nothing was changed)."""


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.b64decode(text, validate=True)


def _encode(identity: Identity, passphrase: str | None = None) -> bytes:
    signing_seed, agreement_seed = identity.private_seeds()
    document: dict[str, Any]
    if passphrase is None:
        document = {
            "format": FILE_FORMAT,
            "user": identity.user,
            "ed25519_seed": _b64(signing_seed),
            "x25519_seed": _b64(agreement_seed),
            "identity_key": identity.identity_key.hex(),
        }
    else:
        sealed = wrapping.wrap(
            signing_seed + agreement_seed, passphrase, user=identity.user, identity_key=identity.identity_key
        )
        document = {
            "format": PROTECTED_FORMAT,
            "user": identity.user,
            "identity_key": identity.identity_key.hex(),
            "scrypt": {"salt": _b64(sealed.salt), "n": sealed.n, "r": sealed.r, "p": sealed.p},
            "aes_256_gcm": {"nonce": _b64(sealed.nonce), "ciphertext": _b64(sealed.ciphertext)},
        }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _parse(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise KeyStoreError(f"key file {path} is corrupt: {error}") from None
    if not isinstance(document, dict) or document.get("format") not in (FILE_FORMAT, PROTECTED_FORMAT):
        found = document.get("format") if isinstance(document, dict) else None
        raise KeyStoreError(f"key file {path} is corrupt: unknown format {found!r}")
    return document


def _unwrap_seeds(
    path: Path, document: dict[str, Any], user: str, passphrase: Passphrase | None
) -> tuple[bytes, bytes]:
    try:
        params, sealed = document["scrypt"], document["aes_256_gcm"]
        wrapped = wrapping.Wrapped(
            salt=_unb64(params["salt"]),
            n=int(params["n"]),
            r=int(params["r"]),
            p=int(params["p"]),
            nonce=_unb64(sealed["nonce"]),
            ciphertext=_unb64(sealed["ciphertext"]),
        )
        wrapping.check_parameters(wrapped.n, wrapped.r, wrapped.p)
        identity_key = bytes.fromhex(document["identity_key"])
    except (ValueError, KeyError, TypeError, InvalidArgument) as error:
        raise KeyStoreError(f"key file {path} is corrupt: {error}") from None
    if passphrase is None:
        raise PassphraseRequired(f"key file {path} is protected by a passphrase")
    try:
        seeds = wrapping.unwrap(wrapped, passphrase(), user=document.get("user", user), identity_key=identity_key)
    except wrapping.WrongPassphrase:
        raise WrongPassphrase(f"wrong passphrase for the key file of {user} ({path}); nothing was changed") from None
    except InvalidArgument as error:
        raise KeyStoreError(f"key file {path} is corrupt: {error}") from None
    if len(seeds) != 2 * KEY_BYTES:
        raise KeyStoreError(f"key file {path} is corrupt: it wraps {len(seeds)} bytes, not two seeds")
    return seeds[:KEY_BYTES], seeds[KEY_BYTES:]


def _decode(path: Path, raw: bytes, user: str, passphrase: Passphrase | None = None) -> Identity:
    document = _parse(path, raw)
    try:
        if document["format"] == PROTECTED_FORMAT:
            signing_seed, agreement_seed = _unwrap_seeds(path, document, user, passphrase)
        else:
            signing_seed, agreement_seed = _unb64(document["ed25519_seed"]), _unb64(document["x25519_seed"])
        identity = Identity(document["user"], signing_seed, agreement_seed)
    except (ValueError, KeyError, TypeError, AttributeError, InvalidArgument) as error:
        raise KeyStoreError(f"key file {path} is corrupt: {error}") from None
    if identity.user != user:
        raise KeyStoreError(f"key file {path} holds the keys of {identity.user}, not of {user}")
    recorded = document.get("identity_key")
    if recorded is not None and recorded != identity.identity_key.hex():
        raise KeyStoreError(f"key file {path} is corrupt: its identity key does not match its seed")
    return identity


def is_protected(user: str, directory: str | os.PathLike[str] | None = None) -> bool:
    """True if the key file of `user` exists and is protected by a passphrase."""
    path = key_path(user, directory)
    if not path.exists():
        return False
    return _parse(path, read_private_file(path))["format"] == PROTECTED_FORMAT


def save(identity: Identity, directory: str | os.PathLike[str] | None = None, *, passphrase: str | None = None) -> Path:
    """Write (or atomically replace) the identity file, wrapped under `passphrase` if given; returns its path."""
    path = key_path(identity.user, directory)
    write_private_file(path, _encode(identity, passphrase))
    return path


def load(
    user: str, directory: str | os.PathLike[str] | None = None, *, passphrase: Passphrase | None = None
) -> Identity:
    """Read the identity of `user`; `KeyStoreError` if missing, corrupt, not private or not unlocked."""
    path = key_path(user, directory)
    return _decode(path, read_private_file(path), user, passphrase)


def load_or_create(
    user: str, directory: str | os.PathLike[str] | None = None, *, passphrase: Passphrase | None = None
) -> tuple[Identity, bool]:
    """The identity of `user`, generating and saving a new (unprotected) one on first use.

    Returns `(identity, created)`. Safe against two processes racing to create it.
    """
    path = key_path(user, directory)
    if not path.exists():
        fresh = Identity.generate(user)
        if write_private_file(path, _encode(fresh), replace=False):
            return fresh, True
    return _decode(path, read_private_file(path), user, passphrase), False
