"""The History gRPC service: reads of the recent messages per conversation (`/history`).

Only reads: gateways append through the same `HistoryStore` Lua script directly on
the send path (one Redis round trip instead of an extra gRPC hop), and recovery after
a reconnect reads the delivery log, never this cache. Reads go through an in-process
`@lru_cache` keyed by the conversation's current epoch and newest offset, so a hit is
never stale.
Access control (is the caller part of the conversation?) is the gateway's job: the
history service is internal and serves only callers that hold the service secret
(every call is signed, `spartan.rpc.service_auth`).
"""

from __future__ import annotations

import grpc

from spartan.history_store import HistoryStore
from spartan.rpc.handlers import unary
from spartan.v1 import pb, rpc

SERVICE = "history"


class HistoryServicer(rpc.HistoryServicer):
    def __init__(self, store: HistoryStore) -> None:
        self.store = store

    @unary(SERVICE)
    async def Read(self, request: pb.HistoryRequest, context: grpc.aio.ServicerContext) -> pb.HistoryResponse:
        return await self.store.read_cached(request.conversation, request.after_offset, request.limit)
