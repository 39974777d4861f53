"""Remembers which keys each peer had (trust on first use) and whether the user verified them.

The key directory is run by the server, so a server could hand out its own key
for a peer. The client therefore pins the first identity and agreement keys it
sees for every peer in `<user>.pins.json` next to its identity file (mode 0600)
and reports a later different key as CHANGED. A changed key is never pinned
here on its own: only `accept`, the user's decision, replaces a pin (and clears
the verified mark). `mark_verified` marks exactly the identity key the user
compared, and refuses if the pin is another one by then. Keys pinned in
configuration (`auth.pinned_keys`) are authoritative: they count as verified
and can never be replaced.
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
    CHANGED = "changed"  # a different key than the pinned one: nothing is pinned until the user accepts it


def _now_us() -> int:
    return time.time_ns() // 1000


class PinConflict(FailedPrecondition):
    """A key differs from the one pinned in configuration; it cannot be accepted."""


@dataclass
class Pin:
    identity_key: str  # hex
    verified: bool = False
    agreement_key: str = ""  # hex; "" in pin files written before agreement keys were pinned
    agreement_signature: str = ""  # hex: with the two keys, a complete PublicKeys (usable after a restart)
    first_seen_us: int = 0
    changed_at_us: int = 0  # 0: never changed


def _hex_key(identity_key: bytes | str) -> str:
    if isinstance(identity_key, str):
        try:
            identity_key = bytes.fromhex(identity_key)
        except ValueError:
            raise InvalidArgument(f"pinned key {identity_key!r} is not hex") from None
    if len(identity_key) != 32:
        raise InvalidArgument(f"a public key is 32 bytes, got {len(identity_key)}")
    return identity_key.hex()


def _hex_optional(agreement_key: bytes) -> str:
    return _hex_key(agreement_key) if agreement_key else ""


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

    def check(self, peer: str, identity_key: bytes, agreement_key: bytes = b"") -> PinResult:
        """Compare keys the directory returned with the pinned ones (does not change anything).

        The agreement key counts only when one was given and one is pinned.
        """
        pinned = self.pinned_key(peer)
        if pinned is None:
            return PinResult.NEW
        if pinned != identity_key:
            return PinResult.CHANGED
        pin = self._pins.get(peer)
        if agreement_key and pin is not None and pin.agreement_key and pin.agreement_key != agreement_key.hex():
            return PinResult.CHANGED
        return PinResult.SAME

    def pinned_keys(self, peer: str) -> tuple[bytes, bytes, bytes] | None:
        """(identity key, agreement key, agreement signature) as pinned, if all three are known."""
        pin = self._pins.get(peer)
        if pin is None or not pin.agreement_key or not pin.agreement_signature:
            return None
        return (
            bytes.fromhex(pin.identity_key),
            bytes.fromhex(pin.agreement_key),
            bytes.fromhex(pin.agreement_signature),
        )

    def pin(
        self, peer: str, identity_key: bytes, agreement_key: bytes = b"", agreement_signature: bytes = b""
    ) -> PinResult:
        """Trust on first use: pin the keys of a peer seen for the first time; returns what they were.

        A CHANGED key is reported and NOT pinned (that takes `accept`). Raises
        `PinConflict` for a peer pinned in configuration to another key.
        """
        key_hex, agreement_hex = _hex_key(identity_key), _hex_optional(agreement_key)
        if peer in self._configured:
            self._refuse_unconfigured(peer, key_hex)
            return PinResult.SAME
        result = self.check(peer, identity_key, agreement_key)
        if result is PinResult.CHANGED:
            return result
        pin = self._pins.get(peer)
        signature_hex = agreement_signature.hex()
        if pin is None:
            self._pins[peer] = Pin(
                identity_key=key_hex,
                agreement_key=agreement_hex,
                agreement_signature=signature_hex,
                first_seen_us=_now_us(),
            )
        elif (agreement_hex and not pin.agreement_key) or (signature_hex and not pin.agreement_signature):
            pin.agreement_key = pin.agreement_key or agreement_hex  # completes a pin written by an older client
            pin.agreement_signature = pin.agreement_signature or signature_hex
        else:
            return result
        self._save()
        return result

    def accept(
        self, peer: str, identity_key: bytes, agreement_key: bytes = b"", agreement_signature: bytes = b""
    ) -> None:
        """The user accepted changed keys for `peer`: pin them; the verified mark is cleared."""
        key_hex = _hex_key(identity_key)
        if peer in self._configured:
            self._refuse_unconfigured(peer, key_hex)
            return
        previous = self._pins.get(peer)
        self._pins[peer] = Pin(
            identity_key=key_hex,
            agreement_key=_hex_optional(agreement_key),
            agreement_signature=agreement_signature.hex(),
            first_seen_us=previous.first_seen_us if previous else _now_us(),
            changed_at_us=_now_us() if previous else 0,
        )
        self._save()

    def _refuse_unconfigured(self, peer: str, key_hex: str) -> None:
        if self._configured[peer] != key_hex:
            raise PinConflict(
                f"the key offered for {peer} ({key_hex[:16]}…) differs from the key pinned "
                f"in configuration ({self._configured[peer][:16]}…); refusing it"
            )

    def mark_verified(self, peer: str, identity_key: bytes) -> None:
        """Record that the user compared the safety number of exactly `identity_key` with `peer`.

        Raises `FailedPrecondition` if that is not the pinned key (any more).
        """
        if peer in self._configured:
            return
        pin = self._pins.get(peer)
        if pin is None:
            raise FailedPrecondition(f"no key pinned for {peer} yet; fetch their keys first")
        if pin.identity_key != _hex_key(identity_key):
            raise FailedPrecondition(f"the key pinned for {peer} is not the one whose number you compared")
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
