"""The History gRPC service: recent messages per conversation, read (and written) through one store.

Gateways append through the same `HistoryStore` Lua script directly on the send hot
path (one Redis round trip instead of an extra gRPC hop); this service serves the
read path (replay on reconnect, `/history`) through an in-process `@lru_cache` keyed
by the conversation's current epoch and newest offset, so a hit is never stale, and
offers `Append` for other writers.
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
    async def Append(self, request: pb.AppendRequest, context: grpc.aio.ServicerContext) -> pb.SendAck:
        return await self.store.append(request.message, list(request.channels))

    @unary(SERVICE)
    async def Read(self, request: pb.HistoryRequest, context: grpc.aio.ServicerContext) -> pb.HistoryResponse:
        return await self.store.read_cached(request.conversation, request.after_offset, request.limit)
