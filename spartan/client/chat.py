"""The chat session: the seed's conversation flow, incoming messages, and sending.

Flow (the seed transcript): connect, list the other users, then either answer a
pending chat request or pick someone, then chat. Incoming messages are shown exactly
once (de-duplicated by id) and in order; messages of another conversation wait
until the user switches to it. Every message is end-to-end encrypted before it
leaves; a message to someone who never logged in waits for their key.
"""
from __future__ import annotations

import uuid
from collections import OrderedDict, defaultdict

import grpc

from spartan import naming
from spartan.client.connection import Connection
from spartan.client.e2e import ClientCrypto, PeerHasNoKeys
from spartan.client.groups import GroupChatView
from spartan.client.terminal import InteractiveTerminal, PipedTerminal
from spartan.errors import InvalidArgument
from spartan.v1 import pb
from spartan.validation import check_text

SEEN_IDS_KEPT = 10_000
GAP_TEXT = "Some earlier messages in this conversation are no longer available."


def say(text: str) -> str:
    return f"[Spartan] {text}"


class Chat:
    def __init__(self, conn: Connection, terminal: InteractiveTerminal | PipedTerminal, crypto: ClientCrypto,
                 max_message_bytes: int) -> None:
        self.conn = conn
        self.terminal = terminal
        self.crypto = crypto
        self.me = conn.user
        self.max_message_bytes = max_message_bytes
        self.users: list[str] = []
        self.groups: list[str] = []
        self.peer = ""  # current 1:1 peer ("" while choosing)
        self.group = ""  # current group chat ("" unless one is open)
        self.pending: list[str] = []  # users asking to chat with me, oldest first
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.positions: dict[str, tuple[str, int]] = {}  # conversation -> (epoch, newest offset received)
        self.waiting: dict[str, list[pb.Message]] = defaultdict(list)  # other conversations' messages
        self.announced: set[str] = set()
        self.queued_for_keys: dict[str, list[tuple[str, str]]] = defaultdict(list)  # peer -> [(id, text)]
        self.last_failed: tuple[str, str] | None = None  # (peer or group, text) for /retry
        self.group_view = GroupChatView(self)

    # ------------------------------------------------------------ display
    def show(self, line: str) -> None:
        self.terminal.show(line)

    def notice(self, text: str) -> None:
        self.show(say(text))

    @property
    def conversation(self) -> str:
        if self.group:
            return naming.group_conversation(self.group)
        return naming.dm_conversation(self.me, self.peer) if self.peer else ""

    def cursors(self) -> list[pb.Cursor]:
        return [pb.Cursor(conversation=c, epoch=e, offset=o) for c, (e, o) in self.positions.items()]

    def _remember(self, message_id: str) -> bool:
        """False if this id was shown already."""
        if message_id in self.seen:
            return False
        self.seen[message_id] = None
        if len(self.seen) > SEEN_IDS_KEPT:
            self.seen.popitem(last=False)
        return True

    def _advance(self, message: pb.Message) -> None:
        if not message.conversation or not message.offset:
            return
        epoch, offset = self.positions.get(message.conversation, ("", 0))
        if epoch != message.epoch or message.offset > offset:
            self.positions[message.conversation] = (message.epoch, message.offset)

    # ------------------------------------------------------------ start-up
    def selection_prompt(self) -> str:
        if self.pending:
            return say(f"{self.pending[0]} is requesting to chat with you. Enter 'yes' to accept or different user: ")
        return say("Enter a user whom you want to chat with: ")

    async def choose_peer(self) -> None:
        """Answer a pending request or pick a user, until a chat starts."""
        while not (self.peer or self.group):
            answer = (await self.terminal.ask(self.selection_prompt)).strip()
            if not answer:
                continue
            if answer.startswith("/"):
                from spartan.client.commands import run_command  # commands import this module

                await run_command(self, answer)
                continue
            if self.pending and answer.lower() in ("yes", "y"):
                await self.accept(self.pending[0])
            elif self.pending and answer.lower() in ("no", "n"):
                await self.decline(self.pending[0])
            else:
                await self.start_with(answer)

    async def start_with(self, name: str) -> None:
        if name in self.groups:
            await self.group_view.open(name)
            return
        if name == self.me:
            self.notice("You cannot chat with yourself. Pick someone from the user list.")
            return
        if name not in self.users:
            self.notice(f"Unknown user '{name}'. Pick one of: {','.join(u for u in self.users if u != self.me)}")
            return
        if name in self.pending:
            await self.accept(name)
            return
        try:
            await self.conn.call("RequestChat", pb.ChatRequest(peer=name))
        except grpc.aio.AioRpcError as exc:
            self.notice(f"Could not ask {name} to chat: {exc.details()}")
            return
        await self.open_chat(name)

    async def accept(self, requester: str) -> None:
        await self._respond(requester, True)
        await self.open_chat(requester)

    async def decline(self, requester: str) -> None:
        await self._respond(requester, False)
        self.notice(f"You declined {requester}'s request.")

    async def _respond(self, requester: str, accept: bool) -> None:
        if requester in self.pending:
            self.pending.remove(requester)
        try:
            await self.conn.call("RespondChat", pb.ChatRequest(peer=requester, accept=accept))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:  # already answered elsewhere: fine
                self.notice(f"Could not answer {requester}: {exc.details()}")

    async def open_chat(self, peer: str) -> None:
        self.peer, self.group = peer, ""
        self.announced.discard(peer)
        self.notice(f"You are now ready to chat with {peer}.")
        await self.show_history(peer, only_unseen=True)

    async def show_history(self, peer: str, *, only_unseen: bool) -> None:
        conversation = naming.dm_conversation(self.me, peer)
        try:
            history = await self.conn.call("GetHistory", pb.HistoryRequest(peer=peer))
        except grpc.aio.AioRpcError as exc:
            self.notice(f"Could not load history: {exc.details()}")
            return
        for message in [*history.messages, *self.waiting.pop(conversation, [])]:
            self._advance(message)
            if only_unseen and not self._remember(message.id):
                continue
            if not only_unseen:
                self._remember(message.id)
            await self.display(message)

    # ------------------------------------------------------------ incoming
    async def handle(self, message: pb.Message) -> None:
        kind = message.kind
        if kind == pb.CHAT and message.group:
            await self.group_view.on_chat(message)
        elif kind == pb.SENDER_KEY:
            await self.group_view.on_sender_key(message)
        elif kind == pb.CHAT:
            self._advance(message)
            if message.sender == self.me or message.id in self.seen:
                return
            if message.conversation == self.conversation:
                self._remember(message.id)
                await self.display(message)
            else:
                self.waiting[message.conversation].append(message)
                if self.peer and message.sender not in self.announced:
                    self.announced.add(message.sender)
                    self.notice(f"New message from {message.sender}. Type /switch {message.sender} to read it.")
        elif kind == pb.CHAT_REQUEST:
            await self._on_request(message.sender)
        elif kind == pb.CHAT_DECLINE:
            self.notice(f"{message.sender} declined your chat request.")
        elif kind == pb.KEY_UPDATE and message.sender != self.me:
            self.crypto.forget(message.sender)
            await self.flush_queued(message.sender)
            await self.group_view.keys.on_peer_keys(message.sender)
        elif kind == pb.NOTICE:
            self.notice(GAP_TEXT if message.conversation else message.text)
        elif kind == pb.MEMBERSHIP:
            await self.group_view.on_membership(message)

    async def _on_request(self, requester: str) -> None:
        if requester == self.peer:
            await self._respond(requester, True)  # we are already chatting with them
            return
        if requester not in self.pending:
            self.pending.append(requester)
        if self.peer:
            self.notice(f"{requester} is requesting to chat with you. Type /accept {requester} or /decline {requester}.")
        else:
            self.terminal.refresh()

    async def display(self, message: pb.Message) -> None:
        text = await self.crypto.open(message)
        if text is None:
            self.notice(f"A message from {message.sender} could not be decrypted.")
        else:
            self.show(f"[{message.sender}] {text}")

    # ------------------------------------------------------------ sending
    async def send(self, text: str, peer: str | None = None, message_id: str | None = None) -> bool:
        if (peer is None and self.group) or (peer and peer in self.groups):
            return await self.group_view.send(text, peer or self.group, message_id)
        peer = peer or self.peer
        if not peer:
            self.notice("Pick a chat first: /switch USER or /group NAME.")
            return False
        if not self.text_ok(text):
            return False
        message_id = message_id or uuid.uuid4().hex
        try:
            body = await self.crypto.seal(peer, text, message_id)
        except PeerHasNoKeys:
            self.queued_for_keys[peer].append((message_id, text))
            self.notice(f"{peer} has not logged in yet, so there is no key to encrypt to. "
                        "Your message will be sent as soon as they do.")
            return False
        except grpc.aio.AioRpcError as exc:
            return self.report_send_failure(peer, text, exc)
        return await self.submit(peer, text, pb.Message(id=message_id, kind=pb.CHAT, recipient=peer, body=body))

    def text_ok(self, text: str) -> bool:
        """Check typed text before it is encrypted; explains a refusal."""
        try:
            check_text(text, self.max_message_bytes)
        except InvalidArgument as exc:
            self.notice(f"Not sent: {exc.message}.")
            return False
        return True

    async def submit(self, target: str, text: str, message: pb.Message) -> bool:
        """Send a sealed message; on failure keep `text` for /retry and say why."""
        try:
            await self.conn.call("SendMsg", message)
        except grpc.aio.AioRpcError as exc:
            return self.report_send_failure(target, text, exc)
        self._remember(message.id)
        self.last_failed = None
        return True

    def report_send_failure(self, peer: str, text: str, exc: grpc.aio.AioRpcError) -> bool:
        self.last_failed = (peer, text)
        trailers = dict(exc.trailing_metadata() or ())
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry-after" in trailers:
            wait = float(trailers["retry-after"])
            self.notice(f"Slow down: you can send again in {wait:.1f}s. Type /retry to send that message again.")
        elif exc.code() == grpc.StatusCode.UNAVAILABLE:
            self.notice("Could not send: the server is unavailable right now. Type /retry to send it again.")
        else:
            self.notice(f"Not sent: {exc.details()}")
        return False

    async def flush_queued(self, peer: str) -> None:
        for message_id, text in self.queued_for_keys.pop(peer, []):
            await self.send(text, peer, message_id)
