"""The chat session: the seed's conversation flow, incoming messages, and sending.

Flow (the seed transcript): connect, list the other users, say who wrote while the
user was away, then either answer a pending chat request or pick someone, then chat.
Incoming messages are shown exactly once (de-duplicated by id and offset; the ids
are kept on disk, so a replay after a restart is dropped too) and in order;
messages of another conversation wait until the user switches to it. What
was shown (or handled) is kept on disk per conversation and acknowledged to the
server, which keeps the rest; so a message waiting to be read survives quitting.
Typed lines go through the send queue (spartan.client.outgoing): kept on disk, sent
in order as the rate limit allows, each end-to-end encrypted just before it leaves;
a line for someone who never logged in waits there for their key.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from spartan import naming
from spartan.client.acks import Acknowledger
from spartan.client.api import GatewayApi
from spartan.client.connection import Connection
from spartan.client.e2e import EXPIRED, FORGED, UNACCEPTED, ClientCrypto, Complaints
from spartan.client.explain import action_failed, is_retryable, stream_notice
from spartan.client.group_chat import GroupChatView
from spartan.client.groups import ClientGroups
from spartan.client.outgoing import Outgoing
from spartan.client.state import HELD_KEPT, ClientState
from spartan.client.terminal import InteractiveTerminal, PipedTerminal
from spartan.crypto.prekeys import WINDOW_DAYS
from spartan.crypto.sender_keys import max_plaintext_bytes
from spartan.errors import InvalidArgument, SpartanError
from spartan.read_positions import ReadPositions
from spartan.v1 import pb
from spartan.validation import check_text

T = TypeVar("T")


def say(text: str) -> str:
    return f"[Spartan] {text}"


class Chat:
    def __init__(
        self,
        conn: Connection,
        terminal: InteractiveTerminal | PipedTerminal,
        crypto: ClientCrypto,
        max_message_bytes: int,
        state: ClientState | None = None,
    ) -> None:
        self.conn = conn
        self.api = GatewayApi(conn)
        self.terminal = terminal
        self.crypto = crypto
        self.me = conn.user
        self.max_message_bytes = max_message_bytes
        self.users: list[str] = []
        self.groups: list[str] = []
        self.peer = ""  # current 1:1 peer ("" while choosing)
        self.group = ""  # current group chat ("" unless one is open)
        self.pending: list[str] = []  # users asking to chat with me, oldest first
        self.state = state or ClientState()  # what was shown or handled, and the outbox; on disk
        self.seen = self.state.seen  # ids shown or sent (bounded, on disk): a replay is dropped
        self.complaints = Complaints()  # dropped 1:1 messages: one line per sender per 10 s
        self.had = ReadPositions(dict(self.state.positions))  # newest received per conversation (resume cursors)
        self.waiting: dict[str, list[pb.Message]] = defaultdict(list)  # other conversations' messages
        self.announced: set[str] = set()
        self.acks = Acknowledger(self.api.ack)
        self.synced = asyncio.Event()  # the stream replayed what waited for us
        self.started_us = time.time_ns() // 1000
        self.away: Counter[str] = Counter()  # who wrote (user or group) before this client started
        self.retry_line: str | None = None  # the last command the rate limit or an outage stopped, for /retry
        self.group_keys = ClientGroups(crypto, self.api, self.notice, self.state)
        self.group_view = GroupChatView(self, self.group_keys)
        self.outgoing = Outgoing(
            self.state,
            self.seal,
            self.api.send_msg,
            status=terminal.status,
            notice=self.notice,
            countdown=isinstance(terminal, InteractiveTerminal),
            on_sent=self.remember,
        )

    # ------------------------------------------------------------ display
    def show(self, line: str) -> None:
        self.terminal.show(line)

    def notice(self, text: str) -> None:
        self.show(say(text))

    def stream_notice(self, text: str) -> None:
        """A notice about the connection (the gateway's or the receiver's), in the user's words."""
        shown = stream_notice(text)
        if shown:
            self.notice(shown)

    @property
    def conversation(self) -> str:
        if self.group:
            return naming.group_conversation(self.group)
        return naming.dm_conversation(self.me, self.peer) if self.peer else ""

    def cursors(self) -> list[pb.Cursor]:
        return self.had.cursors()

    def remember(self, message_id: str) -> bool:
        """False if this id was shown already (kept on disk, so also after a restart)."""
        return self.state.remember(message_id)

    def keep(self, conversation: str) -> None:
        """Record (on disk, then with the server) how far `conversation` is had: up to its first
        message still waiting to be read, else up to the newest received."""
        if conversation not in self.had.positions:
            return
        epoch, offset = self.had.positions[conversation]
        waiting = self.waiting.get(conversation)
        if waiting and waiting[0].epoch == epoch:
            offset = min(offset, waiting[0].offset - 1)
        if self.state.record(conversation, epoch, offset):
            self.acks.note(conversation, epoch, offset)

    # ------------------------------------------------------------ start-up
    def selection_prompt(self) -> str:
        if self.pending:
            return say(f"{self.pending[0]} is requesting to chat with you. Enter 'yes' to accept or different user: ")
        return say("Enter a user whom you want to chat with: ")

    async def choose_peer(self, run_command: Callable[[str], Awaitable[None]]) -> None:
        """Answer a pending request or pick a user, until a chat starts (`run_command` runs a /command)."""
        while not (self.peer or self.group):
            answer = (await self.terminal.ask(self.selection_prompt)).strip()
            if not answer:
                continue
            if answer.startswith("/"):
                await run_command(answer)
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
            await self.api.request_chat(pb.ChatRequest(peer=name))
        except SpartanError as exc:
            if is_retryable(exc):
                self.retry_line = f"/switch {name}"
            self.notice(action_failed(f"asking {name} to chat", exc))
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
            await self.api.respond_chat(pb.ChatRequest(peer=requester, accept=accept))
        except SpartanError as exc:
            if exc.code != grpc.StatusCode.FAILED_PRECONDITION:  # already answered elsewhere: fine
                self.notice(f"Could not answer {requester}: {exc.message}")

    async def open_chat(self, peer: str) -> None:
        self.peer, self.group = peer, ""
        self.announced.discard(peer)
        self.notice(f"You are now ready to chat with {peer}.")
        await self.show_waiting(naming.dm_conversation(self.me, peer))

    async def enter_group(self, group: str, others: list[str]) -> None:
        """Make `group` (with verified members `others`) the open conversation and show what waited in it."""
        self.peer, self.group = "", group
        self.terminal.refresh()  # the prompt names the group now
        self.announced.discard(group)
        self.notice(f"You are now in group {group}" + (f" with {', '.join(others)}." if others else "."))
        await self.show_waiting(naming.group_conversation(group))

    def joined(self, group: str) -> None:
        """A verified change made this user a member of `group`."""
        if group not in self.groups:
            self.groups.append(group)

    def left(self, group: str) -> None:
        """A verified change took this user out of `group`: forget where it was had, leave it if open."""
        if group not in self.groups:
            return
        self.groups.remove(group)
        self.had.positions.pop(naming.group_conversation(group), None)
        self.state.forget(naming.group_conversation(group))
        if self.group == group:
            self.group = ""
            self.terminal.refresh()  # the prompt named the group
            self.notice(f"You are no longer a member of {group}. Pick a chat with /switch USER or /group NAME.")

    async def show_waiting(self, conversation: str) -> None:
        """Show, in order, what arrived for `conversation` while another one was open."""
        for message in self.waiting.pop(conversation, []):
            if message.group:
                await self.group_view.show(message)
            elif self.remember(message.id):
                await self.display(message)
        self.keep(conversation)

    async def recent(self, request: pb.HistoryRequest) -> list[pb.Message]:
        """The recent messages the server's cache holds for a conversation, each id remembered as shown
        (so a live copy is not shown again); none, after saying why, if they cannot be loaded."""
        try:
            history = await self.api.get_history(request)
        except SpartanError as exc:
            self.notice(f"Could not load history: {exc.message}")
            return []
        for message in history.messages:
            self.remember(message.id)
        return list(history.messages)

    async def show_history(self, peer: str) -> None:
        """`/history` in a 1:1 chat (a group's: `GroupChatView.show_history`)."""
        for message in await self.recent(pb.HistoryRequest(peer=peer)):
            await self.display(message)

    # ------------------------------------------------------------ incoming
    async def handle(self, message: pb.Message) -> None:
        if not self.had.is_new(message):
            return  # a copy of something this client already has (a replay overlapping a live copy)
        kind = message.kind
        if kind == pb.CHAT and message.group:
            await self.group_view.on_chat(message)
        elif kind == pb.SENDER_KEY:
            await self.group_view.on_sender_key(message)
        elif kind == pb.CHAT:
            if message.sender == self.me or message.id in self.seen:
                pass
            elif message.conversation == self.conversation:
                self.remember(message.id)
                await self.display(message)
            else:
                self.wait_for_reader(message, message.sender)
        elif kind == pb.CHAT_REQUEST:
            await self._on_request(message.sender)
        elif kind == pb.CHAT_DECLINE:
            self.notice(f"{message.sender} declined your chat request.")
        elif kind == pb.KEY_UPDATE and message.sender != self.me:
            await self.crypto.on_key_update(message.sender)  # re-fetched on the client's schedule
            self.outgoing.unblock(message.sender)
            await self.group_keys.on_peer_keys(message.sender)
        elif kind == pb.NOTICE and message.conversation:
            self.notice(self.describe_loss(message))
        elif kind == pb.NOTICE:
            self.stream_notice(message.text)
        elif kind == pb.MEMBERSHIP:
            await self.group_view.on_membership(message)
        elif kind == pb.SYNCED:
            self.synced.set()
        if message.conversation and message.offset:
            self.had.advance(message)
            self.keep(message.conversation)

    def wait_for_reader(self, message: pb.Message, source: str) -> None:
        """Keep a message of a conversation that is not open; say so once (or count it, at start-up)."""
        self.waiting[message.conversation].append(message)
        if not self.synced.is_set() and message.sent_at_us < self.started_us:
            self.away[source] += 1
        elif self.synced.is_set() and (self.peer or self.group) and source not in self.announced:
            self.announced.add(source)
            command = f"/group {source}" if message.group else f"/switch {source}"
            where = f"in {source}" if message.group else f"from {source}"
            self.notice(f"New message {where}. Type {command} to read it.")

    def describe_loss(self, message: pb.Message) -> str:
        members = naming.dm_members(message.conversation)
        group = naming.group_name(message.conversation)
        where = (
            f"with {next((m for m in members if m != self.me), self.me)}"
            if members
            else f"in {group}"
            if group
            else "of your chat requests"
        )
        if message.missing:
            count = f"{message.missing} earlier message{'s' if message.missing != 1 else ''}"
            return f"{count} {where} could not be kept for you and are lost (too old or too many)."
        return f"Some earlier messages {where} may have been lost by the server."

    def report_away(self) -> None:
        """After catching up: who wrote while this user was away."""
        for source, count in sorted(self.away.items()):
            if source in self.pending:
                continue  # "<source> is requesting to chat with you" says it; picking them shows all
            plural = "s" if count != 1 else ""
            if source in self.groups:
                self.notice(f"{count} new message{plural} in {source} while you were away.")
            else:
                self.notice(f"{source} sent you {count} message{plural} while you were away.")
        self.away.clear()

    async def _on_request(self, requester: str) -> None:
        if requester == self.peer:
            await self._respond(requester, True)  # we are already chatting with them
            return
        if requester not in self.pending:
            self.pending.append(requester)
        if self.peer:
            self.notice(
                f"{requester} is requesting to chat with you. Type /accept {requester} or /decline {requester}."
            )
        else:
            self.terminal.refresh()

    async def display(self, message: pb.Message) -> None:
        opened = await self.crypto.open_checked(message)
        if opened.text is not None:
            self.show(f"[{message.sender}] {opened.text}")
            return
        sender = message.sender
        if opened.problem == UNACCEPTED:
            for peer in self.state.hold(message.id, sender, message.SerializeToString()):  # shown if accepted
                if self.state.dropped[peer] == 1:  # once per peer until the next acceptance: counted from then on
                    self.notice(
                        f"Only the newest {HELD_KEPT} messages waiting for a key you have not accepted are kept: "
                        f"older ones from {peer} are being dropped (/accept-key {peer} after /verify {peer})."
                    )
        count = self.complaints.count(f"{opened.problem}:{sender}")
        if count is None:
            return  # said less than 10 s ago: counted for the next line
        more = f" ({count} since the last such line)" if count > 1 else ""
        if opened.problem == UNACCEPTED:
            self.notice(
                f"A message signed with {sender}'s new key, which you have not accepted, is not shown as "
                f"from {sender}{more}. Compare safety numbers (/verify {sender}), then /accept-key {sender} "
                "to see it."
            )
        elif opened.problem == EXPIRED:
            self.notice(
                f"A message from {sender} can no longer be read{more}: the key it was sealed to is not on this "
                f"device (deleted after {WINDOW_DAYS} days for forward secrecy, or made by another device "
                "with your key file)."
            )
        else:
            assert opened.problem == FORGED
            self.notice(f"A message from {sender} could not be decrypted or verified and was dropped{more}.")

    async def accept_key(self, peer: str) -> None:
        """`/accept-key`: use the new key of `peer` the user was shown; what waited for it goes."""
        keys = self.crypto.accept(peer)
        self.notice(
            f"Accepted {peer}'s new key (safety number {self.crypto.number(peer, keys.identity_key)}); "
            f"{peer} is not verified until you compare numbers again (/verify {peer})."
        )
        self.outgoing.unblock(peer)
        await self.group_keys.on_peer_keys(peer)
        dropped = self.state.dropped.get(peer, 0)
        held = [pb.Message.FromString(raw) for raw in self.state.release(peer)]
        if dropped:
            self.notice(
                f"{dropped} older message{'s' if dropped != 1 else ''} {peer} sent under that key "
                f"{'were' if dropped != 1 else 'was'} not kept: only the newest {HELD_KEPT} waiting messages are."
            )
        if held:
            self.notice(f"What {peer} sent under that key ({len(held)} message{'s' if len(held) != 1 else ''}):")
            for message in held:
                await self.display(message)

    # ------------------------------------------------------------ sending
    def prompt(self) -> str:
        """`[group1] alice > ` inside a group, `[alice] > ` in a 1:1 chat (the seed's prompt)."""
        return f"[{self.group}] {self.me} > " if self.group else f"[{self.me}] > "

    async def send(self, text: str) -> bool:
        """Queue a typed line for the open conversation; it goes out in order (spartan.client.outgoing)."""
        target = naming.group_conversation(self.group) if self.group else self.peer
        if not target:
            self.notice("Pick a chat first: /switch USER or /group NAME.")
            return False
        if not self.text_ok(text):
            return False
        self.outgoing.put(target, text)
        return True

    def text_ok(self, text: str) -> bool:
        """Check typed text before it is queued; explains a refusal."""
        try:
            check_text(text, max_plaintext_bytes(self.max_message_bytes))
        except InvalidArgument as exc:
            self.notice(f"Not sent: {exc.message}.")
            return False
        return True

    async def seal(self, target: str, text: str, message_id: str) -> pb.Message:
        """Encrypt a queued line for a user or a group (`group:NAME`); raises PeerHasNoKeys or a gRPC error."""
        group = naming.group_name(target)
        if group:
            body = await self.group_keys.seal(group, text, message_id)
            return pb.Message(id=message_id, kind=pb.CHAT, group=group, body=body)
        body = await self.crypto.seal(target, text, message_id)
        return pb.Message(id=message_id, kind=pb.CHAT, recipient=target, body=body)

    async def attempt(self, action: str, call: Awaitable[T]) -> T | None:
        """Run one server call for `action` (a command line naming its target, e.g. `/leave group1`);
        if the rate limit or an outage stops it, say exactly what was not done and keep it for /retry."""
        try:
            return await call
        except SpartanError as exc:
            if is_retryable(exc):
                self.retry_line = action
            self.notice(action_failed(action, exc))
            return None
