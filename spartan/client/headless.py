"""A client without a terminal, for scripts, bots, benchmarks and tests.

It logs in with the user's key, keeps the stream open with the same receiver the
CLI uses (failover, resume from cursors), decrypts 1:1 messages and records what
arrived, once per message id, in order.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from spartan import naming
from spartan.client.connection import Connection
from spartan.client.e2e import ClientCrypto
from spartan.client.receiver import Receiver
from spartan.config import TlsConfig
from spartan.crypto.keystore import load_or_create
from spartan.crypto.pins import PinStore
from spartan.v1 import pb


@dataclass(frozen=True)
class Received:
    sender: str
    text: str | None  # None: could not be decrypted
    message: pb.Message
    received_at: float  # time.time() on arrival


class HeadlessClient:
    def __init__(self, user: str, addresses: Sequence[str], key_dir: str, *, tls: TlsConfig | None = None,
                 encrypt: bool = True) -> None:
        identity, _ = load_or_create(user, key_dir)
        self.user = user
        self.conn = Connection(addresses, identity, tls or TlsConfig())
        self.encrypt = encrypt
        self.notices: list[str] = []
        self.crypto = ClientCrypto(identity, PinStore(user, key_dir), self._fetch_keys, self.notices.append)
        self.received: list[Received] = []
        self.events: list[pb.Message] = []  # everything that is not a chat message
        self.positions: dict[str, tuple[str, int]] = {}
        self._seen: set[str] = set()
        self._arrived = asyncio.Condition()
        self.receiver = Receiver(self.conn, self._handle, self._cursors, self.notices.append)

    async def _fetch_keys(self, user: str) -> pb.PublicKeys:
        return await self.conn.call("GetKeys", pb.GetKeysRequest(user=user))

    def _cursors(self) -> list[pb.Cursor]:
        return [pb.Cursor(conversation=c, epoch=e, offset=o) for c, (e, o) in self.positions.items()]

    async def start(self, timeout: float = 15.0) -> "HeadlessClient":
        await self.conn.open()
        self.receiver.start()
        await self.receiver.wait_connected(timeout)
        return self

    async def close(self) -> None:
        await self.receiver.stop()
        await self.conn.close()

    def follow(self, peer: str) -> None:
        """Track a conversation from its start, so a reconnect replays it from offset 0."""
        self.positions.setdefault(naming.dm_conversation(self.user, peer), ("", 0))

    async def send(self, peer: str, text: str, message_id: str | None = None) -> pb.SendAck:
        message_id = message_id or uuid.uuid4().hex
        body = await self.crypto.seal(peer, text, message_id) if self.encrypt else text.encode()
        self._seen.add(message_id)
        return await self.conn.call("SendMsg", pb.Message(id=message_id, kind=pb.CHAT, recipient=peer, body=body))

    async def call(self, method: str, request: object) -> object:
        return await self.conn.call(method, request)

    async def _handle(self, message: pb.Message) -> None:
        if message.conversation and message.offset:
            epoch, offset = self.positions.get(message.conversation, ("", 0))
            if epoch != message.epoch or message.offset > offset:
                self.positions[message.conversation] = (message.epoch, message.offset)
        if message.kind != pb.CHAT:
            self.events.append(message)
        elif message.id not in self._seen and message.sender != self.user:
            self._seen.add(message.id)
            text = await self.crypto.open(message) if self.encrypt else message.body.decode()
            self.received.append(Received(message.sender, text, message, time.time()))
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Wait until at least `count` chat messages arrived; returns them all."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.received) >= count), timeout)
        return list(self.received)

    async def wait_event(self, kind: int, timeout: float = 15.0) -> pb.Message:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: any(e.kind == kind for e in self.events)), timeout)
        return next(e for e in self.events if e.kind == kind)

    def texts(self) -> list[str | None]:
        return [r.text for r in self.received]
