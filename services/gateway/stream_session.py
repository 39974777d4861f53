"""One open `ReceiveMsg` stream: a bounded mailbox the hub fills and the handler drains.

The hub calls `deliver` synchronously from its owner task, so it must never block:
when the bounded queue is full the session is marked overflowed and its queue dropped,
and the stream is ended with RESOURCE_EXHAUSTED and a sentence (`SLOW_STREAM`) through
the `end` callback the handler registered, from a task of its own: the handler may be
parked in a write the client reads slowly, and a stream must never just stop (a
cancelled handler sends no status, so its client would look connected and receive
nothing). The client reconnects and catches up from the delivery log. A handler still
parked in a write a moment after the status went out belongs to a client that reads
nothing at all: it is cancelled, so it holds no memory. The session also remembers the
newest offset and epoch it delivered per conversation, to drop a live copy of
something already replayed and to know what to replay after a gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from spartan.metrics import SLOW_CONSUMERS
from spartan.read_positions import ReadPositions
from spartan.v1 import pb

log = logging.getLogger("spartan.gateway")

SLOW_STREAM = (
    "more messages arrived than this stream could take in time, so the server ended it; "
    "reconnect to receive them from the delivery log"
)
STUCK_WRITE_SECONDS = 1.0  # after the status: a handler still parked in a write is cancelled

Ender = Callable[[str], Awaitable[None]]  # sends the closing status with this sentence (context.abort)


class StreamSession(ReadPositions):
    """Also where this stream is in each conversation (`ReadPositions`: is_new, mark, cursor)."""

    def __init__(self, user: str, session_id: str, queue_size: int) -> None:
        super().__init__()
        self.user = user
        self.session_id = session_id
        self.queue_size = queue_size
        self.queue: deque[tuple[pb.Message, bytes]] = deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False
        self.gap = False
        self.outage = False
        self.reconnecting = False  # told `Reconnecting…`, not yet `Reconnected.`: one pair per outage
        self.closing_reason = ""
        self.handler: asyncio.Task[object] | None = None  # the task serving this stream
        self.end: Ender | None = None  # how to end the stream with a status from outside its handler
        self.ending: asyncio.Task[None] | None = None  # that status on its way (after an overflow)
        self.status_sent = asyncio.Event()  # the call is marked ended: the handler may return
        self.groups: set[str] = set()  # groups joined while this stream was open
        self.channels: set[str] = set()  # every channel the hub routes to this stream

    # Mailbox protocol (called by the hub).
    def deliver(self, message: pb.Message, raw: bytes) -> None:
        if self.overflowed:
            return
        if len(self.queue) >= self.queue_size:
            self._overflow()
        else:
            self.queue.append((message, raw))
        self.wakeup.set()

    def _overflow(self) -> None:
        self.overflowed = True
        self.queue.clear()
        SLOW_CONSUMERS.inc()
        if self.end is not None:
            self.ending = asyncio.get_running_loop().create_task(self._end_stream(), name="end-slow-stream")

    async def _end_stream(self) -> None:
        """Send RESOURCE_EXHAUSTED now, whatever the handler is doing; free a handler that cannot move."""
        assert self.end is not None
        sending = asyncio.ensure_future(self.end(SLOW_STREAM))
        sending.add_done_callback(_retrieve)  # abort() raises once the status is out, by design
        await asyncio.sleep(0)  # abort() marks the call as ended before its first await
        self.status_sent.set()  # so the handler may return now: grpc finishes the call with that status
        if self.handler is None or self.handler.done():
            return
        await asyncio.wait({self.handler}, timeout=STUCK_WRITE_SECONDS)
        if not self.handler.done():
            log.info("stream of %s ended; its client reads nothing, so its handler is released", self.user)
            self.handler.cancel()

    def on_gap(self) -> None:
        self.gap = True
        self.wakeup.set()

    def on_outage(self) -> None:
        self.outage = True
        self.wakeup.set()

    def close(self, reason: str) -> None:
        self.closing_reason = reason
        self.wakeup.set()


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
