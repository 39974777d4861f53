"""A client without a terminal, for scripts, bots, benchmarks and tests.

It logs in with the user's key, keeps the stream open with the same receiver the
CLI uses (failover, resume from cursors), decrypts 1:1 messages and records what
arrived, once per message id, in order, and acknowledges it. With `persist=True` its
positions and the ids it recorded live on disk next to the key (`spartan.client.state`),
so a new process resumes where the last one stopped and drops a replayed old message.
Group messages use the same sender-key logic as the CLI (`spartan.client.groups.ClientGroups`);
a group message whose key arrives after it is recorded at once with `text=None` and filled in
when the key comes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from spartan import naming
from spartan.client.acks import Acknowledger
from spartan.client.api import GatewayApi
from spartan.client.connection import Connection
from spartan.client.e2e import ClientCrypto
from spartan.client.groups import NO_KEY, ClientGroups
from spartan.client.receiver import Receiver
from spartan.client.state import ClientState
from spartan.config import TlsConfig
from spartan.crypto.keystore import Passphrase, load_or_create
from spartan.crypto.pins import PinStore
from spartan.crypto.prekeys import OwnPrekeys
from spartan.read_positions import START, ReadPositions
from spartan.v1 import pb


@dataclass(frozen=True)
class Received:
    sender: str
    text: str | None  # None: could not be decrypted
    message: pb.Message
    received_at: float  # time.time() on arrival


class HeadlessClient:
    def __init__(
        self,
        user: str,
        addresses: Sequence[str],
        key_dir: str,
        *,
        tls: TlsConfig | None = None,
        encrypt: bool = True,
        persist: bool = False,
        on_chat: Callable[[Received], None] | None = None,
        passphrase: Passphrase | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`on_chat` is called for each new chat message as it is recorded (before its position is kept);
        `passphrase` is asked for the key file's passphrase if the file is protected (`KeyStoreError` if
        it is protected and none is given, or the passphrase is wrong); `clock` (Unix seconds) decides when the
        client's prekeys are replaced and deleted and how old a peer's prekey is."""
        identity, _ = load_or_create(user, key_dir, passphrase=passphrase)
        self.user = user
        self.prekeys = OwnPrekeys.for_user(identity, key_dir, clock=clock)
        self.conn = Connection(addresses, identity, tls or TlsConfig(), prekeys=self.prekeys)
        self.api = GatewayApi(self.conn)
        self.encrypt = encrypt
        self.notices: list[str] = []
        self.crypto = ClientCrypto(
            identity, PinStore(user, key_dir), self.api.keys_of, self.notices.append, self.prekeys, wall_clock=clock
        )
        self.received: list[Received] = []
        self.events: list[pb.Message] = []  # everything that is not a chat message
        self.state = ClientState.for_user(user, key_dir) if persist else ClientState()
        self.had = ReadPositions(self.state.positions)  # what this client has, per conversation (the journal's)
        self.positions = self.had.positions
        self.on_chat = on_chat
        self.synced = asyncio.Event()  # set when the stream replayed everything that waited
        self.acks = Acknowledger(self.api.ack)
        self._arrived = asyncio.Condition()
        self.receiver = Receiver(self.conn, self._handle, self.had.cursors, self.notices.append)
        self.groups = ClientGroups(self.crypto, self.api, self.notices.append, self.state)
        self._parked: dict[tuple[str, str], list[int]] = defaultdict(list)  # (group, sender) -> indexes in received

    async def start(self, timeout: float = 15.0) -> HeadlessClient:
        await self.conn.open()
        self.receiver.start()
        self.acks.start()
        await self.receiver.wait_connected(timeout)
        return self

    async def close(self) -> None:
        await self.receiver.stop()
        await self.acks.stop()
        self.groups.close()
        await self.conn.close()
        self.state.close()

    def follow(self, peer: str) -> None:
        """Track a conversation from its start, so a reconnect replays it from offset 0."""
        self.positions.setdefault(naming.dm_conversation(self.user, peer), START)

    async def send(self, peer: str, text: str, message_id: str | None = None) -> pb.SendAck:
        message_id = message_id or uuid.uuid4().hex
        body = await self.crypto.seal(peer, text, message_id) if self.encrypt else text.encode()
        self.state.remember(message_id)
        return await self.api.send_msg(pb.Message(id=message_id, kind=pb.CHAT, recipient=peer, body=body))

    def follow_group(self, group: str) -> None:
        """Track a group conversation from its start, so a reconnect replays it from offset 0."""
        self.positions.setdefault(naming.group_conversation(group), START)

    async def send_group(self, group: str, text: str, message_id: str | None = None) -> pb.SendAck:
        message_id = message_id or uuid.uuid4().hex
        body = await self.groups.seal(group, text, message_id) if self.encrypt else text.encode()
        self.state.remember(message_id)
        return await self.api.send_msg(pb.Message(id=message_id, kind=pb.CHAT, group=group, body=body))

    def received_in(self, group: str) -> list[Received]:
        return [r for r in self.received if r.message.group == group]

    async def call(self, method: str, request: object) -> object:
        """Any unary method by name, with any request (tests send malformed ones); the client itself uses `api`."""
        return await self.conn.call(method, request)

    async def _handle(self, message: pb.Message) -> None:
        if message.kind == pb.SYNCED:
            self.synced.set()
        if message.kind == pb.NOTICE and not message.conversation:
            self.notices.append(message.text)
        if message.kind != pb.CHAT:
            if self.encrypt:
                await self._group_control(message)
            self.events.append(message)
        elif message.sender != self.user and self.state.remember(message.id):
            if not self.encrypt:
                text: str | None = message.body.decode()
            elif message.group:
                text = await self._open_group(message, len(self.received))
            else:
                text = await self.crypto.open(message)
            self.received.append(Received(message.sender, text, message, time.time()))
            if self.on_chat is not None:
                self.on_chat(self.received[-1])
        self._keep_position(message)
        async with self._arrived:
            self._arrived.notify_all()

    def _keep_position(self, message: pb.Message) -> None:
        if message.conversation and message.offset and self.had.is_new(message):
            self.state.record(message.conversation, message.epoch, message.offset)
            self.acks.note(message.conversation, message.epoch, message.offset)

    async def _open_group(self, message: pb.Message, index: int) -> str | None:
        opened = await self.groups.open(message)
        if opened.problem == NO_KEY:
            self._parked[(message.group, message.sender)].append(index)
        return opened.text

    async def _group_control(self, message: pb.Message) -> None:
        if message.kind == pb.MEMBERSHIP:
            await self.groups.on_membership(message)
            if self.user not in message.members:
                self.state.forget(naming.group_conversation(message.group))
        elif message.kind == pb.KEY_UPDATE and message.sender != self.user:
            await self.crypto.on_key_update(message.sender)  # re-fetched on the client's schedule
            await self.groups.on_peer_keys(message.sender)
        elif message.kind == pb.SENDER_KEY and await self.groups.on_sender_key(message):
            for index in self._parked.pop((message.group, message.sender), []):
                earlier = self.received[index]
                text = await self._open_group(earlier.message, index)
                self.received[index] = dataclasses.replace(earlier, text=text)

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until `condition()` holds, re-checked after every message."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(condition), timeout)

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
