"""Group messages: one symmetric key per (group, sender), signed by the sender's identity key.

Each member owns a *sender key* per group: 32 random bytes, a random 64-bit key
id and the group membership version it was made for. The owner sends it to
every other member through the pairwise channel (`seal_sender_key` /
`open_sender_key`), then encrypts each group message once:

    version (1 byte = 0x03) | key id (8) | membership version (8) | membership hash (32)
    | nonce (12) | ciphertext | GCM tag (16) | signature (64)

AES-256-GCM under the sender key with associated data (group, sender, key id,
message id); the signature is Ed25519 by the sender's identity key over a
labelled transcript of the same fields and the whole envelope before it. The
membership version and hash are the sender's verified view of the group
(`spartan.crypto.membership`), signed with the message, so a receiver learns
when a sender has seen a change the server did not show it. The plaintext is
padded to a multiple of 64 bytes (`spartan.crypto.padding`). Version 0x02 envelopes
(unpadded) and 0x01 (unpadded, no view) are still read.
Receivers verify the signature *first*: every member holds the sender key, so
without it any member could forge messages from another.

When membership changes every member rotates its own key and redistributes it
only to the current members (`SenderKeyRing.on_membership`), so a removed
member cannot read anything sent afterwards and a new member cannot read what
was sent before it joined. A key is also replaced once it is a day old: it
travels sealed to each member's prekey, so group messages get the same bounded
forward secrecy as 1:1 ones (`spartan.crypto.prekeys`).
"""

from __future__ import annotations

import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from Crypto.Cipher import AES
from Crypto.Random import get_random_bytes

from spartan.crypto.encoding import DecryptError, encode_fields
from spartan.crypto.identity import Identity, verify_signature
from spartan.crypto.padding import PAD_BLOCK, pad, unpad
from spartan.crypto.pairwise import OVERHEAD as PAIRWISE_OVERHEAD
from spartan.crypto.pairwise import PairwiseCipher
from spartan.crypto.prekeys import ROTATE_SECONDS
from spartan.errors import InvalidArgument
from spartan.naming import group_conversation

ENVELOPE_VERSION = 3  # padded
UNPADDED_ENVELOPE_VERSION = 2  # still read
LEGACY_ENVELOPE_VERSION = 1  # without the membership view: still read
KEY_FORMAT_VERSION = 1
SECRET_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SIGNATURE_BYTES = 64
VIEW_BYTES = 8 + 32
HEADER_BYTES = {
    LEGACY_ENVELOPE_VERSION: 1 + 8 + NONCE_BYTES,
    UNPADDED_ENVELOPE_VERSION: 1 + 8 + VIEW_BYTES + NONCE_BYTES,
    ENVELOPE_VERSION: 1 + 8 + VIEW_BYTES + NONCE_BYTES,
}
OVERHEAD = HEADER_BYTES[ENVELOPE_VERSION] + TAG_BYTES + SIGNATURE_BYTES
AD_LABEL = b"spartan/v1/group-message"
SIGN_LABEL = b"spartan/v1/group-signature"
KEYS_KEPT_PER_SENDER = 8  # older keys of a sender stay readable for in-flight and history messages


@dataclass(frozen=True)
class SenderKey:
    group: str
    owner: str
    key_id: int  # random, 64-bit
    version: int  # group membership version the key was made for
    secret: bytes  # 32 bytes

    @classmethod
    def generate(cls, group: str, owner: str, version: int) -> SenderKey:
        return cls(
            group=group,
            owner=owner,
            key_id=secrets.randbits(64),
            version=version,
            secret=get_random_bytes(SECRET_BYTES),
        )

    def to_bytes(self) -> bytes:
        return bytes((KEY_FORMAT_VERSION,)) + encode_fields(
            self.group, self.owner, self.key_id, self.version, self.secret
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKey:
        """Parse `to_bytes` output; `DecryptError` if malformed."""
        if not data or data[0] != KEY_FORMAT_VERSION:
            raise DecryptError("sender key has an unknown format")
        fields: list[bytes] = []
        position = 1
        try:
            while position < len(data):
                (length,) = struct.unpack_from(">I", data, position)
                position += 4
                if position + length > len(data):
                    raise ValueError("field overruns the data")
                fields.append(data[position : position + length])
                position += length
            group, owner, key_id, version, secret = fields
            if len(key_id) != 8 or len(version) != 8 or len(secret) != SECRET_BYTES:
                raise ValueError("bad field length")
            return cls(
                group=group.decode("utf-8"),
                owner=owner.decode("utf-8"),
                key_id=int.from_bytes(key_id, "big"),
                version=int.from_bytes(version, "big"),
                secret=bytes(secret),
            )
        except (ValueError, struct.error):
            raise DecryptError("sender key is malformed") from None

    def __repr__(self) -> str:  # never print the secret
        return (
            f"SenderKey(group={self.group!r}, owner={self.owner!r}, key_id={self.key_id:016x}, version={self.version})"
        )


@dataclass(frozen=True)
class MembershipView:
    """The group's membership as the sender verified it: version and hash of its last change."""

    version: int
    digest: bytes  # 32 bytes


NO_VIEW = MembershipView(0, bytes(32))


def max_plaintext_bytes(max_body_bytes: int) -> int:
    """The longest plaintext whose envelope, 1:1 or group and padded, still fits in `max_body_bytes`."""
    room = max_body_bytes - max(OVERHEAD, PAIRWISE_OVERHEAD)
    return max(room // PAD_BLOCK * PAD_BLOCK - 1, 0)


def _associated_data(version: int, group: str, sender: str, key_id: int, message_id: str) -> bytes:
    return encode_fields(AD_LABEL, version, group, sender, key_id, message_id)


def _signed_transcript(version: int, group: str, sender: str, key_id: int, message_id: str, body: bytes) -> bytes:
    return encode_fields(SIGN_LABEL, version, group, sender, key_id, message_id, body)


def encrypt_group(
    sender_identity: Identity,
    sender_key: SenderKey,
    plaintext: bytes,
    *,
    message_id: str,
    group: str,
    view: MembershipView = NO_VIEW,
) -> bytes:
    """Encrypt and sign one group message from `sender_identity` under its own sender key, with its `view`."""
    if sender_key.owner != sender_identity.user or sender_key.group != group:
        raise InvalidArgument(
            f"sender key of {sender_key.owner} for group {sender_key.group} cannot send as "
            f"{sender_identity.user} to group {group}"
        )
    nonce = get_random_bytes(NONCE_BYTES)
    cipher = AES.new(sender_key.secret, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    if len(view.digest) != 32:
        raise InvalidArgument("a membership view names a 32-byte hash")
    cipher.update(_associated_data(ENVELOPE_VERSION, group, sender_key.owner, sender_key.key_id, message_id))
    ciphertext, tag = cipher.encrypt_and_digest(pad(plaintext))
    header = bytes((ENVELOPE_VERSION,)) + struct.pack(">QQ", sender_key.key_id, view.version) + view.digest
    body = header + nonce + ciphertext + tag
    signature = sender_identity.sign(
        _signed_transcript(ENVELOPE_VERSION, group, sender_key.owner, sender_key.key_id, message_id, body)
    )
    return body + signature


def _header_bytes(envelope: bytes) -> int:
    header = HEADER_BYTES.get(envelope[0]) if envelope else None
    if header is None or len(envelope) < header + TAG_BYTES + SIGNATURE_BYTES:
        raise DecryptError("group message is truncated or has an unknown version")
    return header


def envelope_key_id(envelope: bytes) -> int:
    """The sender key id a group envelope was encrypted with (to pick the key from a ring)."""
    _header_bytes(envelope)
    return int.from_bytes(envelope[1:9], "big")


def envelope_view(envelope: bytes) -> MembershipView | None:
    """The sender's membership view (None in a legacy envelope); trust it only after `decrypt_group`."""
    _header_bytes(envelope)
    if envelope[0] == LEGACY_ENVELOPE_VERSION:
        return None
    return MembershipView(int.from_bytes(envelope[9:17], "big"), bytes(envelope[17:49]))


def decrypt_group(
    envelope: bytes, *, sender_identity_key: bytes, sender_key: SenderKey, message_id: str, group: str
) -> bytes:
    """Verify the sender's signature, then decrypt; `DecryptError` on any failure."""
    key_id = envelope_key_id(envelope)
    version, header = envelope[0], _header_bytes(envelope)
    sender = sender_key.owner
    body, signature = envelope[:-SIGNATURE_BYTES], envelope[-SIGNATURE_BYTES:]
    if not verify_signature(
        sender_identity_key, _signed_transcript(version, group, sender, key_id, message_id, body), signature
    ):
        raise DecryptError(f"group message {message_id} does not carry a valid signature of {sender}")
    if sender_key.group != group or key_id != sender_key.key_id:
        raise DecryptError(f"group message {message_id} from {sender} uses a sender key this device does not have")
    nonce = body[header - NONCE_BYTES : header]
    ciphertext, tag = body[header:-TAG_BYTES], body[-TAG_BYTES:]
    cipher = AES.new(sender_key.secret, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(_associated_data(version, group, sender, key_id, message_id))
    try:
        plaintext = cipher.decrypt_and_verify(ciphertext, tag)
    except ValueError:
        raise DecryptError(f"group message {message_id} from {sender} failed authentication") from None
    return unpad(plaintext) if version == ENVELOPE_VERSION else plaintext


def seal_sender_key(cipher: PairwiseCipher, sender_key: SenderKey, *, message_id: str) -> bytes:
    """Encrypt my sender key for one member (the body of a SENDER_KEY message to `cipher.peer`)."""
    if sender_key.owner != cipher.me.user:
        raise InvalidArgument(f"only {sender_key.owner} may distribute their own sender key")
    return cipher.encrypt(
        sender_key.to_bytes(),
        message_id=message_id,
        sender=cipher.me.user,
        recipient=cipher.peer,
        conversation=group_conversation(sender_key.group),
    )


def open_sender_key(cipher: PairwiseCipher, body: bytes, *, message_id: str, group: str) -> SenderKey:
    """Decrypt a SENDER_KEY message from `cipher.peer` for `group`; checks owner and group."""
    plain = cipher.decrypt(
        body,
        message_id=message_id,
        sender=cipher.peer,
        recipient=cipher.me.user,
        conversation=group_conversation(group),
    )
    key = SenderKey.from_bytes(plain)
    if key.owner != cipher.peer or key.group != group:
        raise DecryptError(f"sender key from {cipher.peer} is for {key.owner} in group {key.group}")
    return key


class SenderKeyRing:
    """The sender keys one device holds: its own current key per group and the ones it received."""

    def __init__(self, owner: str, *, clock: Callable[[], float] = time.time) -> None:
        """`clock` (Unix seconds) ages my own keys: each is replaced after `ROTATE_SECONDS`, like prekeys."""
        self.owner = owner
        self.clock = clock
        self._own: dict[str, SenderKey] = {}
        self._made: dict[str, float] = {}  # when my own key per group was made
        self._keys: dict[tuple[str, str], OrderedDict[int, SenderKey]] = {}
        self._members: dict[str, tuple[int, frozenset[str]]] = {}

    def own_key(self, group: str) -> SenderKey | None:
        return self._own.get(group)

    def rotate(self, group: str, version: int) -> SenderKey:
        """Make a fresh own key for `group` (to be sent to every current member)."""
        key = SenderKey.generate(group, self.owner, version)
        self._own[group] = key
        self._made[group] = self.clock()
        self._remember(key)
        return key

    def ensure_own_key(self, group: str, version: int) -> tuple[SenderKey, bool]:
        """My key for sending to `group` at membership `version`; `True` if it is new (distribute it).

        A key older than `ROTATE_SECONDS` is replaced too: it reaches members sealed to
        their prekeys, so a key used for a day at most stops being readable when those are deleted.
        """
        key = self._own.get(group)
        if key is not None and key.version == version and self.clock() - self._made[group] < ROTATE_SECONDS:
            return key, False
        return self.rotate(group, version), True

    def add(self, key: SenderKey) -> bool:
        """Store a key received from another member; False if it was refused or already known.

        Keys from users not in the last known member list are refused.
        """
        if key.owner == self.owner:
            return False
        known = self._members.get(key.group)
        if known is not None and key.owner not in known[1]:
            return False
        existing = self._keys.get((key.group, key.owner))
        if existing is not None and existing.get(key.key_id) == key:
            return False
        self._remember(key)
        return True

    def _remember(self, key: SenderKey) -> None:
        keys = self._keys.setdefault((key.group, key.owner), OrderedDict())
        keys[key.key_id] = key
        keys.move_to_end(key.key_id)
        while len(keys) > KEYS_KEPT_PER_SENDER:
            keys.popitem(last=False)

    def get(self, group: str, sender: str, key_id: int) -> SenderKey | None:
        keys = self._keys.get((group, sender))
        return keys.get(key_id) if keys is not None else None

    def latest(self, group: str, sender: str) -> SenderKey | None:
        keys = self._keys.get((group, sender))
        return next(reversed(keys.values())) if keys else None

    def key_for(self, group: str, sender: str, envelope: bytes) -> SenderKey | None:
        """The key a received group envelope needs, or None if this device does not hold it."""
        return self.get(group, sender, envelope_key_id(envelope))

    def on_membership(self, group: str, version: int, members: Iterable[str]) -> SenderKey | None:
        """Apply a membership change: drop keys of removed members, rotate my own key.

        Returns my new key when it must be distributed to the (new) members,
        None when nothing changed or I have not sent to this group yet (the
        first send calls `ensure_own_key`). If I am no longer a member, all
        keys of the group are forgotten.
        """
        member_set = frozenset(members)
        self._members[group] = (version, member_set)
        if self.owner not in member_set:
            self.forget_group(group)
            return None
        for key_group, sender in list(self._keys):
            if key_group == group and sender != self.owner and sender not in member_set:
                del self._keys[(key_group, sender)]
        own = self._own.get(group)
        if own is None or own.version == version:
            return None
        return self.rotate(group, version)

    def forget_group(self, group: str) -> None:
        self._own.pop(group, None)
        self._members.pop(group, None)
        for key in [key for key in self._keys if key[0] == group]:
            del self._keys[key]
