"""Catch-up from the delivery log onto a stream, one conversation at a time, in pages.

Used when a stream opens (after the client's cursors, else after what the user
acknowledged) and after the gateway's pub/sub connection was lost. Before the first
message the stream gets a notice when some are gone for good, with their exact number
when the log knows it (dropped at the per-conversation maximum, or expired), so the
client can say so; a lost epoch (Redis lost its data) is a notice without a number.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from services.gateway.stream_session import StreamSession
from spartan.delivery_log import DeliveryLog, Page
from spartan.metrics import HISTORY_REPLAYED
from spartan.v1 import pb

REPLAY_PAGE = 200  # messages per read: 200 × 64 KiB stays well under what one Redis reply should carry


class DeliveryReplayer:
    def __init__(self, log: DeliveryLog) -> None:
        self.log = log

    async def replay(
        self, session: StreamSession, conversation: str, cursor: pb.Cursor | None
    ) -> AsyncIterator[pb.Message]:
        """Messages of `conversation` after `cursor` (None: after the user's acknowledged position)
        that this stream has not delivered yet."""
        page = await self.log.read(conversation, cursor.offset if cursor else -1, REPLAY_PAGE, session.user)
        epoch_lost = (
            cursor is not None
            and bool(cursor.offset)
            and ((bool(cursor.epoch) and cursor.epoch != page.epoch) or cursor.offset > page.last_offset)
        )
        if epoch_lost:
            page = await self.log.read(conversation, 0, REPLAY_PAGE, session.user)
        if epoch_lost or page.missing:
            yield gap_notice(conversation, page, 0 if epoch_lost else page.missing)
        while True:
            for message in page.messages:
                if session.is_new(message):
                    session.mark(message)
                    HISTORY_REPLAYED.inc()
                    yield message
            if not page.messages or page.messages[-1].offset >= page.last_offset:
                break
            page = await self.log.read(conversation, page.messages[-1].offset, REPLAY_PAGE, session.user)
        if page.last_offset:
            session.positions.setdefault(conversation, (page.epoch, page.last_offset))


def gap_notice(conversation: str, page: Page, missing: int) -> pb.Message:
    """`missing` messages of `conversation` can no longer be delivered (0: an unknown number)."""
    text = (
        f"{missing} earlier message{'s' if missing != 1 else ''} can no longer be delivered"
        if missing
        else "earlier messages may have been lost by the server (it lost its data or switched to a replica)"
    )
    return pb.Message(
        id=uuid.uuid4().hex, kind=pb.NOTICE, conversation=conversation, epoch=page.epoch, missing=missing, text=text
    )
