"""End-to-end encryption as the client uses it: peers' keys, pins, sealing and opening 1:1 messages.

Peer keys come from the directory through the gateway and are pinned on first use;
a key that differs from the pinned one is accepted only with a loud warning (the
peer reinstalled, or someone is in the middle), and `/verify` shows the safety
number to compare out of band. Nothing here ever sends plaintext anywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from spartan.crypto import DecryptError
from spartan.crypto.identity import Identity
from spartan.crypto.pairwise import PairwiseCiphers
from spartan.crypto.pins import PinResult, PinStore
from spartan.crypto.safety import safety_number
from spartan.naming import dm_conversation
from spartan.v1 import pb

FetchKeys = Callable[[str], Awaitable[pb.PublicKeys]]
Warn = Callable[[str], None]


class PeerHasNoKeys(Exception):
    """The peer never logged in, so there is no key to encrypt to yet."""


class ClientCrypto:
    def __init__(self, identity: Identity, pins: PinStore, fetch_keys: FetchKeys, warn: Warn) -> None:
        self.identity = identity
        self.user = identity.user
        self.pins = pins
        self.fetch_keys = fetch_keys
        self.warn = warn
        self.ciphers = PairwiseCiphers(identity)
        self.keys: dict[str, pb.PublicKeys] = {}

    async def peer_keys(self, peer: str, *, refresh: bool = False) -> pb.PublicKeys:
        if peer in self.keys and not refresh:
            return self.keys[peer]
        try:
            keys = await self.fetch_keys(peer)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise PeerHasNoKeys(peer) from None
            raise
        result = self.pins.pin(peer, keys.identity_key)
        if result is PinResult.CHANGED:
            self.warn(
                f"WARNING: {peer}'s security key has changed! If you did not expect this, someone may be "
                f"intercepting your messages. Compare safety numbers with /verify {peer}."
            )
        self.keys[peer] = keys
        return keys

    def forget(self, peer: str) -> None:
        self.keys.pop(peer, None)
        self.ciphers.forget(peer)

    async def seal(self, peer: str, text: str, message_id: str) -> bytes:
        cipher = self.ciphers.get(peer, await self.peer_keys(peer))
        return cipher.encrypt(
            text.encode("utf-8"),
            message_id=message_id,
            sender=self.user,
            recipient=peer,
            conversation=dm_conversation(self.user, peer),
        )

    async def open(self, message: pb.Message) -> str | None:
        """The plaintext of a 1:1 message, or None if it cannot be authenticated."""
        peer = message.sender if message.sender != self.user else message.recipient
        fields = dict(
            message_id=message.id, sender=message.sender, recipient=message.recipient, conversation=message.conversation
        )
        for refresh in (False, True):  # a failure may mean the peer has new keys: fetch once more
            try:
                cipher = self.ciphers.get(peer, await self.peer_keys(peer, refresh=refresh))
                return cipher.decrypt(message.body, **fields).decode("utf-8")
            except (DecryptError, PeerHasNoKeys, UnicodeDecodeError):
                continue
        return None

    async def safety_number(self, peer: str) -> str:
        keys = await self.peer_keys(peer, refresh=True)
        return safety_number(self.user, self.identity.public_keys().identity_key, peer, keys.identity_key)
