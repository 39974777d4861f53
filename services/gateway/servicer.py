"""The public `Spartan` service served by every gateway replica: its handlers, each a few lines.

Stateless by design: sessions are signed tokens any replica verifies, deliveries
come from Redis pub/sub and the delivery log, presence lives behind its service, so
a client may reconnect to any replica. Sends are the send path's (`send_path.py`):
rate decision, checks and appends in one module; streams are `streams.py`'s; who may
read or acknowledge which conversation is `readers.py`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.gateway.auth import Authenticator, authenticated, public, require_declared_access
from services.gateway.groups import GroupDirectory
from services.gateway.hub import Hub
from services.gateway.leases import LeaseKeeper
from services.gateway.readers import ConversationAccess
from services.gateway.send_path import SendPath
from services.gateway.streams import Streams
from spartan.config import Config
from spartan.context import current_user
from spartan.errors import InvalidArgument
from spartan.ratelimit import rate
from spartan.rpc.handlers import stream, unary
from spartan.v1 import pb, rpc
from spartan.validation import check_name, check_user

SERVICE = "gateway"
ACK_CALLS_PER_MINUTE = 600  # clients acknowledge at most a few times a second, batched
MAX_POSITIONS = 1000  # conversations named in one Ack


class SpartanServicer:
    def __init__(
        self,
        *,
        config: Config,
        auth: Authenticator,
        hub: Hub,
        leases: LeaseKeeper,
        presence: rpc.PresenceStub,
        history: rpc.HistoryStub,
        sends: SendPath,
        groups: GroupDirectory,
    ) -> None:
        require_declared_access(type(self), pb.DESCRIPTOR.services_by_name["Spartan"])
        self.config = config
        self.users = frozenset(config.users)
        self.auth = auth
        self.presence = presence
        self.history = history
        self.sends = sends
        self.limits = sends.limits  # what @rate takes its tokens from: the send path's limits, one decision
        self.delivery = sends.delivery
        self.groups = groups
        self.timeout = config.services.call_timeout_seconds
        self.access = ConversationAccess(self.users, groups)
        self.streams = Streams(
            config=config, hub=hub, leases=leases, presence=presence, sends=sends, groups=groups, access=self.access
        )

    # ----------------------------------------------------------------- login
    @unary(SERVICE)
    @public
    async def GetChallenge(self, request: pb.ChallengeRequest, context: grpc.aio.ServicerContext) -> pb.Challenge:
        return await self.auth.challenge(check_user(request.user, self.users, field="user"), context.peer())

    @unary(SERVICE)
    @public
    async def Login(self, request: pb.LoginRequest, context: grpc.aio.ServicerContext) -> pb.Session:
        check_user(request.user, self.users, field="user")
        return await self.auth.login(request, context.peer())

    @unary(SERVICE)
    @authenticated
    async def GetKeys(self, request: pb.GetKeysRequest, context: grpc.aio.ServicerContext) -> pb.PublicKeys:
        return await self.presence.GetKeys(pb.UserRef(user=check_user(request.user, self.users)), timeout=self.timeout)

    # ------------------------------------------------------------- directory
    @unary(SERVICE)
    @authenticated
    async def ListUsers(self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext) -> pb.ListUsersResponse:
        return await self.presence.ListUsers(pb.UserRef(user=current_user.get()), timeout=self.timeout)

    @unary(SERVICE)
    @authenticated
    @rate("request")
    async def RequestChat(self, request: pb.ChatRequest, context: grpc.aio.ServicerContext) -> pb.ChatRequestAck:
        ref = pb.RequestRef(from_user=current_user.get(), to_user=request.peer)
        return await self.presence.RequestChat(ref, timeout=self.timeout)

    @unary(SERVICE)
    @authenticated
    @rate("request")
    async def RespondChat(self, request: pb.ChatRequest, context: grpc.aio.ServicerContext) -> pb.ChatRequestAck:
        ref = pb.RequestRef(from_user=current_user.get(), to_user=request.peer, accept=request.accept)
        return await self.presence.RespondChat(ref, timeout=self.timeout)

    @unary(SERVICE)
    @authenticated
    async def PendingRequests(
        self, request: pb.PendingRequestsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PendingRequestsResponse:
        return await self.presence.PendingRequests(pb.UserRef(user=current_user.get()), timeout=self.timeout)

    # -------------------------------------------------------------- messages
    @unary(SERVICE)
    @authenticated
    async def SendMsg(self, request: pb.Message, context: grpc.aio.ServicerContext) -> pb.SendAck:
        """Acknowledged means kept in the delivery log (and published) for every recipient."""
        return await self.sends.send(current_user.get(), request)

    @unary(SERVICE)
    @authenticated
    async def SendSenderKeys(self, request: pb.SenderKeyBatch, context: grpc.aio.ServicerContext) -> pb.SenderKeyAck:
        stored = await self.sends.send_sender_keys(current_user.get(), request.group, request.keys)
        return pb.SenderKeyAck(stored=stored)

    @unary(SERVICE)
    @authenticated
    async def GetHistory(self, request: pb.HistoryRequest, context: grpc.aio.ServicerContext) -> pb.HistoryResponse:
        conversation = await self.access.readable(current_user.get(), request)
        read = pb.HistoryRequest(conversation=conversation, after_offset=request.after_offset, limit=request.limit)
        return await self.history.Read(read, timeout=self.timeout)

    @unary(SERVICE)
    @authenticated
    @rate("ack", limit=ACK_CALLS_PER_MINUTE, period=60)
    async def Ack(self, request: pb.AckRequest, context: grpc.aio.ServicerContext) -> pb.AckResponse:
        """The caller has these positions: what every member has leaves the delivery log."""
        user = current_user.get()
        if len(request.positions) > MAX_POSITIONS:
            raise InvalidArgument(f"at most {MAX_POSITIONS} positions per acknowledgement")
        for cursor in request.positions:
            members = await self.access.members(user, cursor.conversation)
            if members:
                await self.delivery.ack(cursor.conversation, user, cursor.epoch, cursor.offset, members)
        return pb.AckResponse()

    # ---------------------------------------------------------------- groups
    @unary(SERVICE)
    @authenticated
    @rate("group")
    async def CreateGroup(self, request: pb.GroupRequest, context: grpc.aio.ServicerContext) -> pb.GroupInfo:
        ask = pb.GroupRequest(group=request.group, user=current_user.get(), members=request.members)
        if request.HasField("change"):
            ask.change.CopyFrom(request.change)
        return await self.presence.CreateGroup(ask, timeout=self.timeout)

    @unary(SERVICE)
    @authenticated
    async def GetGroup(self, request: pb.GroupRequest, context: grpc.aio.ServicerContext) -> pb.GroupInfo:
        return await self.groups.require_member(check_name(request.group, "group name"), current_user.get())

    @unary(SERVICE)
    @authenticated
    @rate("group")
    async def AddMember(self, request: pb.GroupRequest, context: grpc.aio.ServicerContext) -> pb.GroupInfo:
        return await self.groups.change("AddMember", request, current_user.get(), request.user)

    @unary(SERVICE)
    @authenticated
    @rate("group")
    async def RemoveMember(self, request: pb.GroupRequest, context: grpc.aio.ServicerContext) -> pb.GroupInfo:
        return await self.groups.change("RemoveMember", request, current_user.get(), request.user or current_user.get())

    # ---------------------------------------------------------------- stream
    @stream(SERVICE)
    @authenticated
    async def ReceiveMsg(
        self, request: pb.Message, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Message | bytes]:
        async for item in self.streams.receive(current_user.get(), request, context):
            yield item

    async def drain(self) -> None:
        """Tell every open stream to reconnect elsewhere (SIGTERM)."""
        await self.streams.drain()
