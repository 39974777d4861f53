"""Remembers which identity key each peer had (trust on first use) and whether it was verified.

The key directory is run by the server, so a server could hand out its own key
for a peer. The client therefore pins the first identity key it sees for every
peer in `<user>.pins.json` next to its identity file (mode 0600), and reports a
later different key as CHANGED so the CLI can warn loudly. Comparing safety
numbers out of band lets the user mark a peer *verified*; a key change resets
that mark. Keys pinned in configuration (`auth.pinned_keys`) are authoritative:
they count as verified and can never be re-pinned to another key.
"""

from __future__ import annotations

import enum
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from spartan.crypto.keystore import KeyStoreError, key_path, read_private_file, write_private_file
from spartan.errors import FailedPrecondition, InvalidArgument

FILE_FORMAT = "spartan-pins-v1"


class PinResult(enum.Enum):
    NEW = "new"  # never seen this peer: trust on first use
    SAME = "same"  # the pinned key
    CHANGED = "changed"  # a different key than the pinned one: warn the user


class PinConflict(FailedPrecondition):
    """A key differs from the one pinned in configuration; it cannot be accepted."""


@dataclass
class Pin:
    identity_key: str  # hex
    verified: bool = False
    first_seen_us: int = 0
    changed_at_us: int = 0  # 0: never changed


def _hex_key(identity_key: bytes | str) -> str:
    if isinstance(identity_key, str):
        try:
            identity_key = bytes.fromhex(identity_key)
        except ValueError:
            raise InvalidArgument(f"pinned key {identity_key!r} is not hex") from None
    if len(identity_key) != 32:
        raise InvalidArgument(f"an identity key is 32 bytes, got {len(identity_key)}")
    return identity_key.hex()


class PinStore:
    """Pinned peer keys of one local user, persisted next to that user's identity file."""

    def __init__(
        self,
        owner: str,
        directory: str | os.PathLike[str] | None = None,
        *,
        configured: Mapping[str, bytes | str] | None = None,
    ) -> None:
        self.owner = owner
        self.path: Path = key_path(owner, directory).with_suffix(".pins.json")
        self._configured = {peer: _hex_key(key) for peer, key in (configured or {}).items()}
        self._pins: dict[str, Pin] = self._load()

    def _load(self) -> dict[str, Pin]:
        if not self.path.exists():
            return {}
        raw = read_private_file(self.path)
        try:
            document = json.loads(raw)
            if document.get("format") != FILE_FORMAT or document.get("owner") != self.owner:
                raise ValueError("not a pin file of this user")
            return {peer: Pin(**fields) for peer, fields in document["peers"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise KeyStoreError(f"pin file {self.path} is corrupt: {error}") from None

    def _save(self) -> None:
        document = {
            "format": FILE_FORMAT,
            "owner": self.owner,
            "peers": {peer: asdict(pin) for peer, pin in sorted(self._pins.items())},
        }
        write_private_file(self.path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))

    def pinned_key(self, peer: str) -> bytes | None:
        """The key this peer is pinned to (configuration first), or None."""
        if peer in self._configured:
            return bytes.fromhex(self._configured[peer])
        pin = self._pins.get(peer)
        return bytes.fromhex(pin.identity_key) if pin else None

    def check(self, peer: str, identity_key: bytes) -> PinResult:
        """Compare a key the directory returned with the pinned one (does not change anything)."""
        pinned = self.pinned_key(peer)
        if pinned is None:
            return PinResult.NEW
        return PinResult.SAME if pinned == identity_key else PinResult.CHANGED

    def pin(self, peer: str, identity_key: bytes) -> PinResult:
        """Pin `identity_key` for `peer` (first use or an accepted change); returns what it was.

        A changed key loses the verified mark. Raises `PinConflict` for a peer
        pinned in configuration to another key.
        """
        key_hex = _hex_key(identity_key)
        if peer in self._configured:
            if self._configured[peer] != key_hex:
                raise PinConflict(
                    f"the key offered for {peer} ({key_hex[:16]}…) differs from the key pinned "
                    f"in configuration ({self._configured[peer][:16]}…); refusing it"
                )
            return PinResult.SAME
        now_us = time.time_ns() // 1000
        pin = self._pins.get(peer)
        if pin is None:
            self._pins[peer] = Pin(identity_key=key_hex, first_seen_us=now_us)
            result = PinResult.NEW
        elif pin.identity_key == key_hex:
            return PinResult.SAME
        else:
            self._pins[peer] = Pin(
                identity_key=key_hex, verified=False, first_seen_us=pin.first_seen_us, changed_at_us=now_us
            )
            result = PinResult.CHANGED
        self._save()
        return result

    def observe(self, peer: str, identity_key: bytes) -> PinResult:
        """Trust on first use in one call: check, then pin (accepting a change, which it reports)."""
        return self.pin(peer, identity_key)

    def mark_verified(self, peer: str) -> None:
        """Record that the user compared safety numbers with `peer` for the pinned key."""
        if peer in self._configured:
            return
        pin = self._pins.get(peer)
        if pin is None:
            raise FailedPrecondition(f"no key pinned for {peer} yet; fetch their keys first")
        if not pin.verified:
            pin.verified = True
            self._save()

    def is_verified(self, peer: str) -> bool:
        if peer in self._configured:
            return True
        pin = self._pins.get(peer)
        return bool(pin and pin.verified)

    def peers(self) -> list[str]:
        return sorted(set(self._pins) | set(self._configured))
