"""The send queue: typed lines leave in the order typed, as fast as the server allows.

Why: the server limits sends per user (3 per 30 s as shipped). A line typed while the
limit holds must neither be dropped nor block typing, so `put` returns at once and
one task sends, oldest first. Each line is in the client state's outbox (on disk)
until the server acknowledged it: a quit keeps what was not sent and the next start
sends it. While the limit or an outage holds the queue, ONE status line says how many
wait (counting down to the next attempt in a real terminal); the server's
`retry-after` trailer says how long. A message for someone who never logged in
waits for their key (a KEY_UPDATE unblocks them) and later lines to that peer wait
behind it, so each conversation keeps its order. Likewise lines for a peer whose key
changed wait until the user accepts the new key (`/accept-key`), said in the status
line. Only a refusal that waiting cannot
change (e.g. no longer a member of the group) drops a line, with one sentence naming it.

Targets are a user name or a group's conversation id (`group:NAME`), as kept on disk.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

from spartan import naming
from spartan.client.e2e import KeyNotAccepted, PeerHasNoKeys
from spartan.client.explain import OUTAGE, retry_after
from spartan.client.state import ClientState
from spartan.errors import InvalidArgument, SpartanError
from spartan.v1 import pb

Seal = Callable[[str, str, str], Awaitable[pb.Message]]  # (target, text, message id) -> the message to send
Send = Callable[[pb.Message], Awaitable[pb.SendAck]]  # GatewayApi.send_msg
Say = Callable[[str], None]

WAITING_FOR_KEYS = "{count} message(s) for {peers} will be sent once they log in for the first time."
WAITING_FOR_ACCEPT = "{count} message(s) for {peer} wait until you accept {peer}'s new key (/accept-key {peer})."
RATE, SERVER = "the rate limit", "the server"
OUTAGE_BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0)
PREVIEW_CHARS = 40


def label(target: str) -> str:
    """How a target reads in a sentence: 'bob' or 'group1'."""
    return naming.group_name(target) or target


def preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


class Outgoing:
    def __init__(
        self,
        state: ClientState,
        seal: Seal,
        send: Send,
        *,
        status: Say,
        notice: Say,
        countdown: bool,
        on_sent: Callable[[str], object] = lambda message_id: None,
    ) -> None:
        """`countdown`: the status line may change every second (a real terminal's toolbar); else it
        changes only when the count does (piped: each change is a line on standard error)."""
        self.state = state
        self.seal = seal
        self.send_msg = send
        self.status = status
        self.notice = notice
        self.countdown = countdown
        self.on_sent = on_sent
        self.blocked: set[str] = set()  # peers without keys yet
        self.unaccepted: set[str] = set()  # peers whose changed key the user has not accepted
        self.held = ""  # RATE or SERVER while something waited for it, until the queue is empty
        self.sent_after_hold = 0
        self._holding = False  # sleeping until the next attempt
        self._next_try = 0.0
        self._outages = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- queue
    def put(self, target: str, text: str) -> str:
        """Queue `text` for `target` (kept on disk at once); returns its message id."""
        message_id = uuid.uuid4().hex
        self.state.queue(message_id, target, text)
        self._wake.set()
        self.show()
        return message_id

    def unblock(self, peer: str) -> None:
        """`peer` has keys now (or the user accepted new ones): what waited for them goes (in order)."""
        self.blocked.discard(peer)
        self.unaccepted.discard(peer)
        self._wake.set()

    def ready(self) -> list[tuple[str, str, str]]:
        """(id, target, text) of every queued line that can go now, oldest first."""
        held = self.blocked | self.unaccepted
        return [(i, t, text) for i, (t, text) in self.state.outbox.items() if t not in held]

    def unsent(self) -> int:
        return len(self.state.outbox)

    # ---------------------------------------------------------------- status
    def describe(self) -> str:
        parts: list[str] = []
        ready = len(self.ready())
        if ready and self.held == RATE:
            wait = max(0, math.ceil(self._next_try - time.monotonic()))
            when = f": next in {wait}s." if self.countdown and self._holding else "; they go out in order."
            parts.append(f"{ready} message(s) waiting for the rate limit{when}")
        elif ready and self.held == SERVER:
            parts.append(f"{ready} message(s) waiting for the server; they go out when it is back.")
        waiting = [t for t, _ in self.state.outbox.values() if t in self.blocked]
        if waiting:
            peers = ", ".join(sorted(set(waiting)))
            parts.append(WAITING_FOR_KEYS.format(count=len(waiting), peers=peers))
        unaccepted = Counter(t for t, _ in self.state.outbox.values() if t in self.unaccepted)
        parts += [WAITING_FOR_ACCEPT.format(count=count, peer=peer) for peer, count in sorted(unaccepted.items())]
        return " ".join(parts)

    def show(self) -> None:
        self.status(self.describe())

    # ---------------------------------------------------------------- sending
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outgoing")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """Never stop sending silently: a failure of the queue itself is said, with what is kept."""
        if task.cancelled() or task.exception() is None:
            return
        self.notice(
            f"Sending stopped after an error ({task.exception()!r}); {self.unsent()} unsent message(s) "
            "are kept and go out the next time you start the client."
        )

    async def settle(self, timeout: float) -> None:
        """Let what can go now go before a quit (a line typed just before Ctrl-D must not be stranded);
        stops early while the rate limit or an outage holds the queue: that waits for the next start."""
        deadline = time.monotonic() + timeout
        while self._task and self.ready() and not self._holding and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            ready = self.ready()
            if not ready:
                self._finished()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._send(*ready[0])

    def _finished(self) -> None:
        if self.held and self.sent_after_hold:
            count = self.sent_after_hold
            self.notice(f"Sent the {count} message{'s' if count != 1 else ''} that waited for {self.held}.")
        self.held, self.sent_after_hold = "", 0
        self.show()

    async def _send(self, message_id: str, target: str, text: str) -> None:
        try:
            message = await self.seal(target, text, message_id)
            await self.send_msg(message)
        except KeyNotAccepted:
            self.unaccepted.add(target)
            self.show()
            return
        except PeerHasNoKeys:
            self.blocked.add(target)
            self.show()
            return
        except InvalidArgument as exc:  # e.g. no signed change makes me a member of the group: waiting cannot help
            self.state.sent(message_id)
            self.notice(f'Not sent to {label(target)}: {exc.message}: "{preview(text)}"')
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # stop(): this task itself is cancelled
            # A failover closed the channel under the call: an outage like any other, tried again (same id).
            await self._hold(SERVER, OUTAGE_BACKOFF_SECONDS[0])
            return
        except SpartanError as exc:
            wait = retry_after(exc)
            if wait is not None:
                await self._hold(RATE, wait)
            elif exc.code in OUTAGE:
                await self._hold(SERVER, OUTAGE_BACKOFF_SECONDS[min(self._outages, len(OUTAGE_BACKOFF_SECONDS) - 1)])
                self._outages += 1
            else:
                self.state.sent(message_id)  # waiting cannot change this answer: say exactly which line
                self.notice(f'Not sent to {label(target)}: {exc.message}: "{preview(text)}"')
            return
        self._outages = 0
        self.state.sent(message_id)
        self.on_sent(message_id)
        if self.held:
            self.sent_after_hold += 1
        self.show()

    async def _hold(self, reason: str, seconds: float) -> None:
        """Wait before the next attempt, the status line counting down."""
        self.held = reason
        self._next_try = time.monotonic() + seconds
        self._holding = True
        try:
            while (left := self._next_try - time.monotonic()) > 0:
                self.show()
                await asyncio.sleep(min(1.0, left) if self.countdown else left)
        finally:
            self._holding = False
