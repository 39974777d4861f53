"""Message streams (`ReceiveMsg`): each replays what waits for its user, says SYNCED, then goes live.

A stream follows its user's channels through the hub (the inbox first, so a 1:1
conversation started meanwhile is announced), catches up from the delivery log after
the client's cursors, and on a pub/sub gap reads again what it may have missed; it
says `Reconnecting…` / `Reconnected.` once per outage of its connection.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import grpc

from services.gateway.groups import GroupDirectory
from services.gateway.hub import Hub
from services.gateway.leases import LeaseKeeper
from services.gateway.open_gate import OpenGate
from services.gateway.readers import ConversationAccess
from services.gateway.replay import DeliveryReplayer
from services.gateway.send_path import KIND_NAMES, SendPath
from services.gateway.stream_session import SLOW_STREAM, StreamSession
from spartan import naming
from spartan.config import Config
from spartan.errors import InvalidArgument, Overloaded, PermissionDenied, Unavailable
from spartan.metrics import ACTIVE_STREAMS, DELIVERY_SECONDS, MESSAGES_DELIVERED
from spartan.v1 import pb, rpc
from spartan.validation import check_name, check_user

RECONNECTING = "Reconnecting…"  # shown when this gateway loses Redis; the stream stays open
RECONNECTED = "Reconnected."
DELIVERED_BY_KIND = {value: MESSAGES_DELIVERED.labels(name) for value, name in KIND_NAMES.items()}


class Streams:
    """Every open stream of this gateway, and the rules for opening, feeding and draining them."""

    def __init__(
        self,
        *,
        config: Config,
        hub: Hub,
        leases: LeaseKeeper,
        presence: rpc.PresenceStub,
        sends: SendPath,
        groups: GroupDirectory,
        access: ConversationAccess,
    ) -> None:
        self.config = config
        self.users = frozenset(config.users)
        self.hub = hub
        self.leases = leases
        self.presence = presence
        self.sends = sends
        self.delivery = sends.delivery
        self.groups = groups
        self.access = access
        self.timeout = config.services.call_timeout_seconds
        self.sessions: dict[str, StreamSession] = {}
        self.streams_of: Counter[str] = Counter()  # open streams per user on this gateway
        self.draining = False
        self.replayer = DeliveryReplayer(sends.delivery)
        self.opens = OpenGate(config.gateway.max_concurrent_stream_opens, config.gateway.stream_open_wait_seconds)

    async def receive(
        self, user: str, request: pb.Message, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Message | bytes]:
        """One `ReceiveMsg` call of `user` (authenticated): what waits for them, SYNCED, then live."""
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
            if not await self.access.members(user, conversation):
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
