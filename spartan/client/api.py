"""The gateway's unary RPCs as typed methods: each takes its request message and returns its reply.

Why: a call named by a string (`call("SendMsg", ...)`) answers `Any`, so a misspelt
method or a wrong request type shows only when it runs; here mypy checks both, and a
test checks every method against the proto's service. Every call goes through
`Connection.call`: the session token, failover, a fresh login when the token is
refused, and one error mapping (a refusal raises a `spartan.errors` class). Logging in
and the message stream are the connection's and the receiver's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from spartan.client.connection import Connection
from spartan.v1 import pb

Request = TypeVar("Request", bound=Message)
Reply = TypeVar("Reply", bound=Message)


class Rpc(Generic[Request, Reply]):
    """One unary method of `spartan.v1.Spartan`: its name, request and reply types."""

    def __init__(self, method: str, request: type[Request], reply: type[Reply]) -> None:
        self.method, self.request, self.reply = method, request, reply

    def __get__(self, api: GatewayApi, owner: Any = None) -> Callable[[Request], Awaitable[Reply]]:
        async def call(request: Request) -> Reply:
            reply: Reply = await api.conn.call(self.method, request)
            return reply

        return call


class GatewayApi:
    send_msg = Rpc("SendMsg", pb.Message, pb.SendAck)
    ack = Rpc("Ack", pb.AckRequest, pb.AckResponse)
    get_keys = Rpc("GetKeys", pb.GetKeysRequest, pb.PublicKeys)
    list_users = Rpc("ListUsers", pb.ListUsersRequest, pb.ListUsersResponse)
    request_chat = Rpc("RequestChat", pb.ChatRequest, pb.ChatRequestAck)
    respond_chat = Rpc("RespondChat", pb.ChatRequest, pb.ChatRequestAck)
    pending_requests = Rpc("PendingRequests", pb.PendingRequestsRequest, pb.PendingRequestsResponse)
    get_history = Rpc("GetHistory", pb.HistoryRequest, pb.HistoryResponse)
    create_group = Rpc("CreateGroup", pb.GroupRequest, pb.GroupInfo)
    get_group = Rpc("GetGroup", pb.GroupRequest, pb.GroupInfo)
    add_member = Rpc("AddMember", pb.GroupRequest, pb.GroupInfo)
    remove_member = Rpc("RemoveMember", pb.GroupRequest, pb.GroupInfo)
    send_sender_keys = Rpc("SendSenderKeys", pb.SenderKeyBatch, pb.SenderKeyAck)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def keys_of(self, user: str) -> pb.PublicKeys:
        """`user`'s public keys from the directory (what `ClientCrypto` fetches and checks)."""
        return await self.get_keys(pb.GetKeysRequest(user=user))
