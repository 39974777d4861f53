"""Signed prekeys: the short-lived X25519 keys 1:1 messages are sealed to, so old messages stop being readable.

Forward secrecy, bounded: each user publishes one *signed prekey* in the key
directory (`pb.SignedPrekey`: a random 64-bit id, the X25519 public key, when it
was made, and an Ed25519 signature by the identity key over
`"spartan/v1/prekey" ‖ user ‖ id ‖ key ‖ created_at_s`, every field
length-prefixed). Senders seal each message to it with a fresh ephemeral key
(`spartan.crypto.pairwise`). The owner makes a new prekey every
`ROTATE_SECONDS` and deletes a replaced one's private half `KEEP_RETIRED_SECONDS`
after replacing it, long enough for messages still waiting in the delivery log
(30 days by default) to be read. For a client that runs at least daily, a
message is therefore readable with the owner's files for at most
`WINDOW_SECONDS` after it was sealed; after that, the key file plus everything
the server stores does not open it. Time while the client is not running does
not count: a prekey still current when it stopped is replaced when it next
starts and kept 30 days from then, so what waited for it meanwhile stays readable.

The private halves live next to the key file in `<user>.prekeys.json` (0600),
sealed with AES-256-GCM under a key derived from the identity's private seeds,
so a passphrase on the key file protects them too. Two clients of one user
share the file: changes happen under an exclusive lock and re-read it first,
and an unknown id re-reads it, so neither loses the other's keys.
"""

from __future__ import annotations

import fcntl
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol import DH
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey.ECC import EccKey
from Crypto.Random import get_random_bytes

from spartan.crypto.encoding import encode_fields
from spartan.crypto.identity import KEY_BYTES, Identity, prekey_transcript
from spartan.crypto.keystore import _b64, _unb64, key_dir, read_private_file, write_private_file
from spartan.v1 import pb

log = logging.getLogger(__name__)

DAY_SECONDS = 24 * 3600
ROTATE_SECONDS = DAY_SECONDS  # a new prekey every day
KEEP_RETIRED_SECONDS = 30 * DAY_SECONDS  # a replaced prekey is deleted this long after (the delivery log's 30 days)
WINDOW_SECONDS = ROTATE_SECONDS + KEEP_RETIRED_SECONDS  # the longest a sealed message stays readable
WINDOW_DAYS = WINDOW_SECONDS // DAY_SECONDS
FILE_LABEL = b"spartan/v1/prekey-file"
FILE_FORMAT = "spartan-prekeys-v1"
NONCE_BYTES = 12
TAG_BYTES = 16


@dataclass
class Prekey:
    """One of my prekeys: the private seed, when it was made, and when a newer one replaced it."""

    id: int
    seed: bytes
    created_at_s: int
    retired_at_s: int | None = None

    @cached_property
    def private(self) -> EccKey:
        """Imported once: an import costs about as much as the key agreement itself."""
        return DH.import_x25519_private_key(self.seed)

    def public(self) -> bytes:
        raw: bytes = self.private.public_key().export_key(format="raw")
        return raw

    def signed(self, identity: Identity) -> pb.SignedPrekey:
        key = self.public()
        signature = identity.sign(prekey_transcript(identity.user, self.id, key, self.created_at_s))
        return pb.SignedPrekey(id=self.id, key=key, created_at_s=self.created_at_s, signature=signature)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "seed": _b64(self.seed), "created": self.created_at_s, "retired": self.retired_at_s}

    @classmethod
    def from_json(cls, item: dict[str, object]) -> Prekey:
        retired = item.get("retired")
        return cls(
            id=int(str(item["id"])),
            seed=_unb64(item["seed"]),
            created_at_s=int(str(item["created"])),
            retired_at_s=None if retired is None else int(str(retired)),
        )


def prekeys_path(user: str, directory: str | Path | None = None) -> Path:
    return key_dir(directory) / f"{user}.prekeys.json"


class OwnPrekeys:
    """My prekeys: the current one (made or replaced when due) and the replaced ones not yet deleted.

    With `path` None they live in memory only (tests, benchmarks); `clock` gives Unix seconds.
    """

    def __init__(self, identity: Identity, path: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.identity = identity
        self.path = path
        self.clock = clock
        self._keys: dict[int, Prekey] = {}
        self._signed: pb.SignedPrekey | None = None
        if path is not None:
            with self._locked():
                self._keys = self._read()

    @classmethod
    def for_user(
        cls, identity: Identity, directory: str | Path | None = None, *, clock: Callable[[], float] = time.time
    ) -> OwnPrekeys:
        return cls(identity, prekeys_path(identity.user, directory), clock=clock)

    # ---------------------------------------------------------------- use
    def current(self) -> pb.SignedPrekey:
        """The prekey to publish and to seal my own copies to; replaces and deletes keys when due."""
        now = int(self.clock())
        newest = self._newest()
        if self._signed is not None and newest is not None and self._signed.id == newest.id and not self._due(now):
            return self._signed  # (a re-read in `private` may have brought a newer one another client made)
        with self._locked():
            if self.path is not None:
                self._keys = self._read()  # another client of mine may have rotated already
            if self._due(now):
                self._maintain(now)
                self._write()
        newest = self._newest()
        assert newest is not None
        self._signed = newest.signed(self.identity)
        return self._signed

    def private(self, prekey_id: int) -> EccKey | None:
        """The private half of my prekey `prekey_id`, or None if it was deleted (or never mine)."""
        prekey = self._keys.get(prekey_id)
        if prekey is None and self.path is not None:
            with self._locked():
                self._keys = self._read()  # made by another client of mine since I read the file
            prekey = self._keys.get(prekey_id)
        return None if prekey is None else prekey.private

    def ids(self) -> set[int]:
        return set(self._keys)

    # ---------------------------------------------------------- schedule
    def _newest(self) -> Prekey | None:
        live = [k for k in self._keys.values() if k.retired_at_s is None]
        return max(live, key=lambda k: k.created_at_s) if live else None

    def _due(self, now: int) -> bool:
        newest = self._newest()
        if newest is None or now - newest.created_at_s >= ROTATE_SECONDS:
            return True
        return any(
            k.retired_at_s is not None and now - k.retired_at_s >= KEEP_RETIRED_SECONDS for k in self._keys.values()
        )

    def _maintain(self, now: int) -> None:
        newest = self._newest()
        if newest is None or now - newest.created_at_s >= ROTATE_SECONDS:
            for key in self._keys.values():
                if key.retired_at_s is None:
                    key.retired_at_s = now
            fresh = Prekey(id=secrets.randbits(64), seed=get_random_bytes(KEY_BYTES), created_at_s=now)
            self._keys[fresh.id] = fresh
        for key in list(self._keys.values()):
            if key.retired_at_s is not None and now - key.retired_at_s >= KEEP_RETIRED_SECONDS:
                del self._keys[key.id]  # forward secrecy: what was sealed to it can no longer be opened

    # --------------------------------------------------------------- file
    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        lock = self.path.with_name(self.path.name + ".lock")
        write_private_file(lock, b"", replace=False)
        with open(lock, "rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _file_key(self) -> tuple[bytes, bytes]:
        signing_seed, agreement_seed = self.identity.private_seeds()
        key = HKDF(signing_seed + agreement_seed, 32, FILE_LABEL, SHA256, context=encode_fields(self.identity.user))
        return key, encode_fields(FILE_LABEL, self.identity.user, self.identity.identity_key)

    def _read(self) -> dict[int, Prekey]:
        assert self.path is not None
        if not self.path.exists():
            return {}
        raw = read_private_file(self.path)  # KeyStoreError, one sentence, if others may read it or it is not ours
        try:
            outer = json.loads(raw)
            key, associated = self._file_key()
            cipher = AES.new(key, AES.MODE_GCM, nonce=_unb64(outer["nonce"]), mac_len=TAG_BYTES)
            cipher.update(associated)
            plain = cipher.decrypt_and_verify(_unb64(outer["sealed"]), _unb64(outer["tag"]))
            items = json.loads(plain)["prekeys"]
            return {key.id: key for key in map(Prekey.from_json, items)}
        except (ValueError, KeyError, TypeError):
            # Sealed under another identity (the keys were reset) or damaged: those prekeys cannot serve.
            log.warning(
                "the prekey file %s does not open with %s's key; starting a new one", self.path, self.identity.user
            )
            return {}

    def _write(self) -> None:
        if self.path is None:
            return
        key, associated = self._file_key()
        nonce = get_random_bytes(NONCE_BYTES)
        cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(associated)
        plain = json.dumps({"prekeys": [k.to_json() for k in self._keys.values()]}).encode()
        sealed, tag = cipher.encrypt_and_digest(plain)
        outer = {"format": FILE_FORMAT, "nonce": _b64(nonce), "sealed": _b64(sealed), "tag": _b64(tag)}
        write_private_file(self.path, json.dumps(outer).encode())
