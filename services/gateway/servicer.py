"""The public `Spartan` service served by every gateway replica.

Stateless by design: sessions are signed tokens any replica verifies, deliveries
come from Redis pub/sub and the delivery log, presence lives behind its service, so
a client may reconnect to any replica. Sends are the send path's (`send_path.py`):
rate decision, checks and appends in one module. A stream first replays what waits
for its user in the delivery log, says SYNCED, then goes live.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import grpc

from services.gateway.auth import Authenticator, authenticated, public, require_declared_access
from services.gateway.groups import GroupDirectory
from services.gateway.hub import Hub
from services.gateway.leases import LeaseKeeper
from services.gateway.open_gate import OpenGate
from services.gateway.replay import DeliveryReplayer
from services.gateway.send_path import KIND_NAMES, SendPath
from services.gateway.stream_session import SLOW_STREAM, StreamSession
from spartan import naming
from spartan.config import Config
from spartan.context import current_user
from spartan.errors import InvalidArgument, Overloaded, PermissionDenied, Unavailable
from spartan.metrics import ACTIVE_STREAMS, DELIVERY_SECONDS, MESSAGES_DELIVERED
from spartan.ratelimit import rate
from spartan.rpc.handlers import stream, unary
from spartan.v1 import pb, rpc
from spartan.validation import check_name, check_user

SERVICE = "gateway"
RECONNECTING = "Reconnecting…"  # shown when this gateway loses Redis; the stream stays open
RECONNECTED = "Reconnected."
DELIVERED_BY_KIND = {value: MESSAGES_DELIVERED.labels(name) for value, name in KIND_NAMES.items()}
ACK_CALLS_PER_MINUTE = 600  # clients acknowledge at most a few times a second, batched
MAX_POSITIONS = 1000  # conversations named in one Ack

log = logging.getLogger("spartan.gateway")


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
        self.hub = hub
        self.leases = leases
        self.presence = presence
        self.history = history
        self.sends = sends
        self.limits = sends.limits  # what @rate takes its tokens from: the send path's limits, one decision
        self.delivery = sends.delivery
        self.groups = groups
        self.timeout = config.services.call_timeout_seconds
        self.sessions: dict[str, StreamSession] = {}
        self.streams_of: Counter[str] = Counter()  # open streams per user on this gateway
        self.draining = False
        self.replayer = DeliveryReplayer(sends.delivery)
        self.opens = OpenGate(config.gateway.max_concurrent_stream_opens, config.gateway.stream_open_wait_seconds)

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
        conversation = await self._readable_conversation(current_user.get(), request)
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
            members = await self._members(user, cursor.conversation)
            if members:
                await self.delivery.ack(cursor.conversation, user, cursor.epoch, cursor.offset, members)
        return pb.AckResponse()

    async def _members(self, user: str, conversation: str) -> list[str]:
        """Who the delivery log of `conversation` is kept for; [] when `user` is no longer part of it."""
        if naming.inbox_owner(conversation) is not None:
            if conversation != naming.inbox_conversation(user):
                raise PermissionDenied("only your own inbox can be read or acknowledged")
            return [user]
        try:
            await self._readable_conversation(user, pb.HistoryRequest(conversation=conversation))
        except PermissionDenied:
            if naming.group_name(conversation) is None:
                raise
            return []  # removed from the group: nothing of it is theirs any more
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return []  # the group is gone
        members = naming.dm_members(conversation)
        if members is not None:
            return list(members)
        return list((await self.groups.require_member(naming.group_name(conversation) or "", user)).members)

    async def _readable_conversation(self, user: str, request: pb.HistoryRequest) -> str:
        chosen = [value for value in (request.conversation, request.peer, request.group) if value]
        if len(chosen) != 1:
            raise InvalidArgument("name exactly one of conversation, peer or group")
        if request.peer:
            return naming.dm_conversation(user, check_user(request.peer, self.users, "peer"))
        if request.group:
            await self.groups.require_member(request.group, user)
            return naming.group_conversation(request.group)
        members = naming.dm_members(request.conversation)
        if members is not None:
            if user not in members:
                raise PermissionDenied("you are not part of that conversation")
            for member in members:
                check_user(member, self.users)
            return request.conversation
        group = naming.group_name(request.conversation)
        if group is None:
            raise InvalidArgument(f"'{request.conversation[:64]}' is not a conversation id (dm:a:b or group:name)")
        await self.groups.require_member(group, user)
        return request.conversation

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
        user = current_user.get()
        if request.sender and request.sender != user:
            raise PermissionDenied(f"this session belongs to {user}, not {request.sender}")
        if self.draining:
            raise Unavailable("this gateway is shutting down; connect to another one")
        resume = self._resume_cursors(user, request.resume)
        limits = self.config.gateway
        if len(self.sessions) >= limits.max_streams:
            raise Overloaded("this gateway holds as many streams as it may; try another one shortly")
        if self.streams_of[user] >= limits.max_streams_per_user:
            raise Overloaded(
                f"you already have {limits.max_streams_per_user} message streams open on this gateway, "
                "the most one user may; close another client first"
            )
        session = StreamSession(user, uuid.uuid4().hex, limits.stream_queue_size)
        session.handler = asyncio.current_task()
        session.end = functools.partial(context.abort, grpc.StatusCode.RESOURCE_EXHAUSTED)
        # Counted before the first await, so a burst of opens cannot pass the caps together.
        self.sessions[session.session_id] = session
        self.streams_of[user] += 1
        ACTIVE_STREAMS.inc()
        lease = self.leases.lease(user, session.session_id)
        opening = False
        try:
            await self.opens.enter()  # set-up steps are paced; live delivery below is not
            opening = True
            groups = await self._follow(session)
            await self.leases.open(lease)
            await context.send_initial_metadata((("x-spartan-gateway", self.leases.gateway_id),))
            for raw in await self.sends.key_inbox.pending(user, groups):
                yield raw
            async for message in self._catch_up(session, groups, resume):
                yield message
            yield pb.Message(id=uuid.uuid4().hex, kind=pb.SYNCED)
            opening = False
            self.opens.leave()
            async for item in self._live(session):
                yield item
        finally:
            if opening:
                self.opens.leave()
            self.sessions.pop(session.session_id, None)
            self.streams_of[user] -= 1
            if self.streams_of[user] <= 0:
                del self.streams_of[user]
            ACTIVE_STREAMS.dec()
            self.hub.unsubscribe(session, session.channels)
            self.leases.close(lease)

    def _resume_cursors(self, user: str, cursors: Sequence[pb.Cursor]) -> dict[str, pb.Cursor]:
        """The client's cursors, checked before anything costs a read: each one names a conversation
        the caller may be part of (1:1 of theirs, a group, their inbox) and there are not too many."""
        cap = self.config.gateway.max_resume_cursors
        if len(cursors) > cap:
            raise InvalidArgument(f"at most {cap} resume cursors per stream; this request named {len(cursors)}")
        resume: dict[str, pb.Cursor] = {}
        for cursor in cursors:
            name = cursor.conversation
            dm = naming.dm_members(name)
            group = naming.group_name(name)
            if dm is not None:
                if user not in dm:
                    raise PermissionDenied("a resume cursor names a conversation you are not part of")
                for member in dm:
                    check_user(member, self.users, "resume cursor user")
            elif group is not None:
                check_name(group, "resume cursor group name")
            elif name != naming.inbox_conversation(user):
                raise InvalidArgument(
                    f"resume cursor '{name[:64]}' is not a conversation id (dm:a:b, group:name or your inbox)"
                )
            resume[name] = cursor
        return resume

    async def _live(self, session: StreamSession) -> AsyncIterator[pb.Message | bytes]:
        while True:
            await session.wakeup.wait()
            session.wakeup.clear()
            if session.closing_reason:
                yield notice(session.closing_reason)
                raise Unavailable(session.closing_reason)
            if session.overflowed:
                if session.ending is None:  # pragma: no cover - every stream registers how it ends
                    raise Overloaded(SLOW_STREAM)
                await asyncio.shield(session.status_sent.wait())
                return  # the status is out; grpc ends the call with it
            if session.outage:
                session.outage = False
                if not session.reconnecting:  # a lost node's channels each end in a gap: one pair for all
                    session.reconnecting = True
                    yield notice(RECONNECTING)
            if session.gap:
                session.gap = False
                groups = await self._follow(session)  # announcements of the outage are lost: read them again
                async for message in self._catch_up(session, groups, {}):
                    yield message
                if session.reconnecting:
                    session.reconnecting = False
                    yield notice(RECONNECTED)
            while session.queue:
                message, raw = session.queue.popleft()
                if message.kind == pb.CONVERSATION:
                    if session.user in (naming.dm_members(message.conversation) or ()):
                        async for replayed in self._follow_conversation(session, message.conversation):
                            yield replayed
                    continue
                if not session.is_new(message):
                    continue
                if self._new_epoch(session, message):
                    # The conversation's log started again (a replica that took over, or a Redis that lost its
                    # data) with nothing read in between: read the new epoch from its start, which says that
                    # earlier messages may be gone, and carries this one.
                    cursor = session.cursor(message.conversation)
                    async for replayed in self.replayer.replay(session, message.conversation, cursor):
                        yield replayed
                    if not session.is_new(message):
                        continue
                session.mark(message)
                if message.kind == pb.CHAT and message.recipient and message.recipient != session.user:
                    continue  # the user's own 1:1 message, on the channel both users follow: they sent it
                joined = await self._observe(session, message) if message.kind == pb.MEMBERSHIP else None
                (DELIVERED_BY_KIND.get(message.kind) or MESSAGES_DELIVERED.labels("unknown")).inc()
                if message.sent_at_us and message.kind == pb.CHAT:
                    DELIVERY_SECONDS.observe(max(0.0, time.time() - message.sent_at_us / 1e6))
                yield raw
                if joined:
                    async for replayed in self._follow_conversation(session, joined):
                        yield replayed

    @staticmethod
    def _new_epoch(session: StreamSession, message: pb.Message) -> bool:
        """True when a live message is of another epoch than what the stream has of its conversation."""
        had = session.positions.get(message.conversation)
        return bool(message.offset) and had is not None and had[1] > 0 and had[0] != message.epoch

    async def _follow(self, session: StreamSession) -> list[str]:
        """Subscribe the stream to every channel of its user; returns the user's groups.

        The inbox channel comes first: a 1:1 conversation started from then on is announced
        there (CONVERSATION), so the index of 1:1 conversations read after it misses none.
        """
        # Copy the names out: keeping the repeated field would pin the reply for the stream's life.
        groups = list((await self.presence.GroupsOf(pb.UserRef(user=session.user), timeout=self.timeout)).groups)
        await self._subscribe(
            session, [naming.user_channel(session.user), naming.BROADCAST_CHANNEL, *map(naming.group_channel, groups)]
        )
        dms = await self.delivery.dm_conversations(session.user)
        await self._subscribe(session, [naming.conversation_channel(dm) for dm in dms])
        return groups

    async def _subscribe(self, session: StreamSession, channels: list[str]) -> bool:
        """True once subscribed; False while the stream is told of an outage of their connection (a gap follows)."""
        session.channels.update(channels)  # before: what the hub routes, the stream's end unsubscribes
        return await self.hub.subscribe(session, channels)

    async def _follow_conversation(self, session: StreamSession, conversation: str) -> AsyncIterator[pb.Message]:
        """Subscribe to a conversation the user just joined, then read its log: what was kept
        before the subscription came through is replayed, what comes after arrives live.
        During an outage of its channel's connection (a cluster node lost, say) the stream's
        gap, once the channel is subscribed again, reads it with every other conversation."""
        if not await self._subscribe(session, [naming.conversation_channel(conversation)]):
            return
        cursor = session.cursor(conversation) if conversation in session.positions else None
        async for message in self.replayer.replay(session, conversation, cursor):
            yield message

    async def _observe(self, session: StreamSession, message: pb.Message) -> str | None:
        """Follow membership changes of this stream's user: join or leave the group's channel.
        Returns the group's conversation when the user joined it (to be followed after this message)."""
        if message.recipient != session.user or not message.group:
            return None
        await self.groups.forget(message.group)
        channel = naming.group_channel(message.group)
        if session.user in message.members:
            session.groups.add(message.group)
            return naming.group_conversation(message.group)
        session.groups.discard(message.group)
        session.channels.discard(channel)
        self.hub.unsubscribe(session, [channel])
        return None

    async def _catch_up(
        self, session: StreamSession, groups: list[str], resume: dict[str, pb.Cursor]
    ) -> AsyncIterator[pb.Message]:
        """Everything waiting for the stream's user: their inbox, 1:1 conversations and groups.

        Each conversation resumes after the client's cursor, else after what this stream
        delivered, else after what the user acknowledged.
        """
        user = session.user
        conversations = [
            naming.inbox_conversation(user),
            *await self.delivery.dm_conversations(user),
            *map(naming.group_conversation, groups),
        ]
        known = set(conversations)
        conversations += [name for name in resume if name not in known]
        own_groups = set(groups) | session.groups
        for conversation in dict.fromkeys(conversations):
            cursor = resume.get(conversation)
            if cursor is None and conversation in session.positions:
                cursor = session.cursor(conversation)
            group = naming.group_name(conversation)
            if group is not None and group not in own_groups:
                continue  # a cursor of a group the user has left (or never joined): nothing to read, no call
            if not await self._members(user, conversation):
                continue  # removed from the group while away: nothing to replay, the stream goes on
            async for message in self.replayer.replay(session, conversation, cursor):
                yield message

    # ----------------------------------------------------------------- drain
    async def drain(self) -> None:
        """Tell every open stream to reconnect elsewhere (SIGTERM)."""
        self.draining = True
        self.sends.draining = True
        for session in list(self.sessions.values()):
            session.close("this gateway is shutting down; reconnecting to another one")


def notice(text: str) -> pb.Message:
    return pb.Message(id=uuid.uuid4().hex, kind=pb.NOTICE, text=text, sent_at_us=time.time_ns() // 1000)
