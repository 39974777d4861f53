"""The delivery log: every message kept for its recipients until they have it.

Why it exists apart from history: history is the seed's LRU cache of *recent*
messages (`max_num_messages_per_user` per conversation, evicted least recently
used); recovery after a reconnect, a client restart or days offline must not depend
on what a cache happens to hold. Each conversation (`dm:a:b`, `group:g`, and
`inbox:<user>` for a user's control messages) has its own log here. One Lua script
assigns the next offset, the conversation's epoch and `sent_at_us` (Redis `TIME`),
stores the message and publishes the very same bytes on the conversation's channel
(`SPUBLISH`, same slot), so every delivered message has
a position that a client can resume from. Members acknowledge positions; what every
member has acknowledged leaves the log, so memory follows what is undelivered.

Bounds: at most `max_per_conversation` messages (the oldest are dropped first) and
the log expires `retention` after its last message. Both kinds of loss are exact to
the reader: offsets are consecutive, `meta` (newest offset, epoch) and `acks` never
expire, so a reader after offset c that finds the oldest held at f > c + 1 knows
that f - c - 1 messages are gone. A Redis that lost its data starts a new epoch, and so
does a replica promoted in a failover (replication is asynchronous: it may lack the
newest appends, and must not hand their offsets out again as if readers did not have them).

Keys (the hash tag is the conversation, so each script touches one cluster slot):

    sp:d:{<conversation>}:meta    hash  last (newest offset), epoch
    sp:d:{<conversation>}:log     list  stored message bytes, oldest first
    sp:d:{<conversation>}:acks    hash  user -> acknowledged offset
    sp:d:{inbox:<user>}:convs     set   the user's 1:1 conversations (with their inbox's tag), whose
                                        channels the user's streams follow
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from redis.asyncio import Redis

from spartan import naming
from spartan.config import DeliveryConfig
from spartan.errors import Unavailable
from spartan.metrics import REDIS_ERRORS
from spartan.redis_conn import text
from spartan.redis_pipeline import AutoPipeline
from spartan.redis_scripts import script
from spartan.v1 import pb

SERVER_FIELDS = ("offset", "epoch", "sent_at_us")
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

log = logging.getLogger("spartan.delivery")


def conversation_keys(conversation: str) -> list[str]:
    """KEYS[1..3] of every delivery script: meta, log and acks of `conversation`."""
    prefix = f"sp:d:{{{conversation}}}:"
    return [prefix + "meta", prefix + "log", prefix + "acks"]


def index_key(user: str) -> str:
    """The set of `user`'s 1:1 conversations, in the slot of the user's inbox."""
    return f"sp:d:{{{naming.inbox_conversation(user)}}}:convs"


@dataclass(frozen=True)
class Stored:
    """Where `append` put a message."""

    offset: int
    epoch: str
    sent_at_us: int
    dropped: int  # older messages the conversation's maximum pushed out


@dataclass(frozen=True)
class Page:
    """One read of a conversation's log."""

    messages: Sequence[pb.Message]
    epoch: str
    last_offset: int  # newest offset ever assigned (0: unknown conversation)
    first_offset: int  # oldest held (0: none held)
    after_offset: int  # the position read after (the user's ack when asked for it)
    acked_offset: int = 0  # what the user acknowledged: trimmed once everyone had it, never "missing"

    @property
    def missing(self) -> int:
        """Messages after `after_offset` that the user never had and are gone for good
        (dropped at the maximum or expired)."""
        had = max(self.after_offset, self.acked_offset)
        if self.last_offset <= had:
            return 0
        oldest = self.first_offset or self.last_offset + 1
        return max(0, oldest - had - 1)


class DeliveryLog:
    def __init__(self, redis: Redis, config: DeliveryConfig, *, pipeline: AutoPipeline | None = None) -> None:
        """With `pipeline`, appends share that connection with the send path's other commands."""
        runner = pipeline or redis
        self.redis = redis
        self.max_per_conversation = config.max_per_conversation
        self.retention_seconds = max(1, int(config.retention_days * 86400))
        self._append = script(runner, "delivery_append")
        self._read = script(runner, "delivery_read")
        self._ack = script(redis, "delivery_ack")
        self._join = script(redis, "delivery_join")

    async def append(self, conversation: str, payload: bytes, sender: str = "") -> Stored:
        """Keep serialized message bytes (without offset/epoch/sent_at_us) and publish them on the
        conversation's channel (in the slot of its keys, so the script can)."""
        channel = naming.conversation_channel(conversation)
        args: list[Any] = [payload, self.max_per_conversation, self.retention_seconds, sender, channel]
        offset, epoch, sent_at_us, dropped = await _call(self._append, conversation_keys(conversation), args)
        return Stored(int(offset), text(epoch), int(sent_at_us), int(dropped))

    async def append_message(self, conversation: str, message: pb.Message) -> Stored:
        """`append` for a message built here (a control message); server fields are the log's to set."""
        message = pb.Message.FromString(message.SerializeToString())
        for name in SERVER_FIELDS:
            message.ClearField(name)
        message.conversation = conversation
        return await self.append(conversation, message.SerializeToString())

    async def read(self, conversation: str, after_offset: int, limit: int, user: str = "") -> Page:
        """Up to `limit` held messages after `after_offset` (-1: after `user`'s acknowledged offset)."""
        last, epoch, first, after, acked, framed = await _call(
            self._read, conversation_keys(conversation), [after_offset, limit, user]
        )
        return Page(
            messages=pb.HistoryResponse.FromString(framed).messages,
            epoch=text(epoch),
            last_offset=int(last),
            first_offset=int(first),
            after_offset=int(after),
            acked_offset=int(acked),
        )

    async def ack(self, conversation: str, user: str, epoch: str, offset: int, members: Iterable[str]) -> int:
        """Record that `user` has `conversation` up to `offset`; returns how many messages left the log."""
        _, trimmed = await _call(self._ack, conversation_keys(conversation), [epoch, offset, user, *members])
        return int(trimmed)

    async def join(self, conversation: str, users: Sequence[str]) -> None:
        """`users` start after the newest message: nothing sent before they joined is theirs."""
        if users:
            await _call(self._join, conversation_keys(conversation), list(users))

    async def remember_dm(self, conversation: str) -> None:
        """Add a 1:1 conversation to both users' index: their streams follow the conversations listed there."""
        members = naming.dm_members(conversation)
        if members is None:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for user in members:
                    pipe.sadd(index_key(user), conversation)
                await pipe.execute()
        except _REDIS_DOWN as error:
            REDIS_ERRORS.labels("delivery_index").inc()
            raise Unavailable(f"delivery log unavailable: {error}") from error

    async def dm_conversations(self, user: str) -> list[str]:
        try:
            names = await self.redis.smembers(index_key(user))
        except _REDIS_DOWN as error:
            raise Unavailable(f"delivery log unavailable: {error}") from error
        return sorted(text(name) for name in names)


async def _call(lua: Any, keys: list[str], args: list[Any]) -> Any:
    try:
        return await lua(keys=keys, args=args)
    except _REDIS_DOWN as error:
        raise Unavailable(f"delivery log unavailable: {error}") from error
