"""One open `ReceiveMsg` stream: a bounded mailbox the hub fills and the handler drains.

The hub calls `deliver` synchronously from its owner task, so it must never block:
when the bounded queue is full the session is marked overflowed, its queue dropped
and the handler's task cancelled (it may be parked in a write the client never
reads), which ends the stream; the client reconnects and catches up from history
instead of slowing every other stream on the gateway or growing memory. The session also
remembers the newest offset and epoch it delivered per conversation, to drop a live
copy of something already replayed and to know what to replay after a gap.
"""
from __future__ import annotations

import asyncio
from collections import deque

from spartan.metrics import SLOW_CONSUMERS
from spartan.v1 import pb


class StreamSession:
    def __init__(self, user: str, session_id: str, queue_size: int) -> None:
        self.user = user
        self.session_id = session_id
        self.queue_size = queue_size
        self.queue: deque[tuple[pb.Message, bytes]] = deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False
        self.gap = False
        self.outage = False
        self.closing_reason = ""
        self.handler: asyncio.Task[object] | None = None  # the task serving this stream
        self.groups: set[str] = set()  # groups joined while this stream was open
        self.positions: dict[str, tuple[str, int]] = {}  # conversation -> (epoch, newest offset delivered)

    # Mailbox protocol (called by the hub).
    def deliver(self, message: pb.Message, raw: bytes) -> None:
        if self.overflowed:
            return
        if len(self.queue) >= self.queue_size:
            self.overflowed = True
            self.queue.clear()
            SLOW_CONSUMERS.inc()
            if self.handler is not None:
                # The handler may be parked in a write the client never reads: cancel it.
                self.handler.cancel()
        else:
            self.queue.append((message, raw))
        self.wakeup.set()

    def on_gap(self) -> None:
        self.gap = True
        self.wakeup.set()

    def on_outage(self) -> None:
        self.outage = True
        self.wakeup.set()

    def close(self, reason: str) -> None:
        self.closing_reason = reason
        self.wakeup.set()

    # Ordering and de-duplication (called by the handler).
    def is_new(self, message: pb.Message) -> bool:
        """True unless this stream already delivered `message` (same epoch, offset not newer)."""
        if not message.conversation or not message.offset:
            return True
        seen = self.positions.get(message.conversation)
        return seen is None or seen[0] != message.epoch or message.offset > seen[1]

    def mark(self, message: pb.Message) -> None:
        if message.conversation and message.offset:
            self.positions[message.conversation] = (message.epoch, message.offset)

    def cursor(self, conversation: str) -> pb.Cursor:
        epoch, offset = self.positions.get(conversation, ("", 0))
        return pb.Cursor(conversation=conversation, offset=offset, epoch=epoch)
