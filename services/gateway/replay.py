"""Replay of one conversation's history onto a stream after a cursor, in pages.

Used when a stream opens with cursors and after the gateway's pub/sub connection
was lost. Pages of 50 messages keep every read under gRPC's message size limit even
with 64 KiB messages. When the cursor's epoch is gone, the cursor is ahead of what
history holds (Redis lost it), or more was sent than history keeps, the stream first
gets a notice so the client can say "some earlier messages are no longer available".
"""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc

from services.gateway.stream_session import StreamSession
from spartan.metrics import HISTORY_REPLAYED
from spartan.v1 import pb, rpc

REPLAY_PAGE = 50  # messages per history read
GAP_NOTICE = "some earlier messages are no longer available"


class HistoryReplayer:
    def __init__(self, history: rpc.HistoryStub, timeout: float) -> None:
        self.history = history
        self.timeout = timeout

    async def replay(self, session: StreamSession, conversation: str, cursor: pb.Cursor) -> AsyncIterator[pb.Message]:
        """Messages of `conversation` after `cursor` that this stream has not delivered yet."""
        missing = False
        try:
            page = await self._read_page(conversation, cursor.offset)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            missing = True  # the cursor is ahead of history: Redis lost it; replay what there is
            page = await self._read_page(conversation, 0)
        if cursor.epoch and page.epoch and cursor.epoch != page.epoch:
            missing = True  # history was evicted or lost since the client saw it
            page = await self._read_page(conversation, 0)
        if cursor.offset and page.first_offset > cursor.offset + 1:
            missing = True  # more was sent than history holds
        if missing:
            yield pb.Message(id=uuid.uuid4().hex, kind=pb.NOTICE, conversation=conversation, epoch=page.epoch,
                             text=GAP_NOTICE)
        while True:
            for message in page.messages:
                if session.is_new(message):
                    session.mark(message)
                    HISTORY_REPLAYED.inc()
                    yield message
            if not page.messages or page.messages[-1].offset >= page.last_offset:
                break
            page = await self._read_page(conversation, page.messages[-1].offset)
        if page.last_offset:
            session.positions.setdefault(conversation, (page.epoch, page.last_offset))

    async def _read_page(self, conversation: str, after_offset: int) -> pb.HistoryResponse:
        """One page of history: small enough to stay under gRPC's message size with 64 KiB messages."""
        request = pb.HistoryRequest(conversation=conversation, after_offset=after_offset, limit=REPLAY_PAGE)
        return await self.history.Read(request, timeout=self.timeout)
