"""Recent history per conversation in Redis: the seed's LRU cache of recent messages.

What it is for: `/history` and the `@lru_cache` of recent messages, capped at
`max_num_messages_per_user` per conversation and `history.max_conversations`
conversations, evicted least recently used. It is a cache: delivery and recovery
never read it (they read the delivery log, `spartan.delivery_log`). One Lua script
(`history_append.lua`) assigns the cache's own offset, epoch and `sent_at_us` (Redis
`TIME`), appends those fields' protobuf encodings to the sender's serialized bytes,
stores the result and trims the log. It publishes nothing: delivery is the delivery
log's job.

Model (Centrifugo's): offsets start at 1 and only ever grow, also across evictions.
The epoch is a string that changes whenever history is lost — when the global LRU
evicts a conversation, or when Redis restarts without persistence (the counters are
gone, so the next append creates a new epoch). A client comparing the epoch it holds
with the current one can tell "history gone" from "nothing new".

Redis key layout (all keys share the hash tag `{hist}`: the global LRU evicts other
conversations' keys from inside one script, so Redis Cluster must put all history in
one slot):

    sp:h:{hist}:meta:<conversation>   hash  last (newest offset), epoch   never evicted
    sp:h:{hist}:log:<conversation>    list  stored message bytes, oldest first,
                                            at most `per_conversation` entries
    sp:h:{hist}:lru                   zset  conversation -> use tick (exact LRU order)
    sp:h:{hist}:tick                  string  INCR counter, the LRU clock

Every append and every read of a conversation held in the LRU bumps its tick. When
an append adds a conversation and the LRU then holds more than `max_conversations`,
the least recently used ones are evicted whole: their log is deleted and their epoch
replaced, while their offset counter stays. Reading an unknown conversation creates
nothing.

`read_cached` answers the same as `read` from an in-process `@lru_cache` without
ever serving stale history: it first asks Redis where the conversation stands
(`history_touch.lua`: newest offset, epoch and log length, which also bumps the LRU),
and the cache key includes that (epoch, last_offset). Any append changes
last_offset and any loss of history changes the epoch, so a hit is exactly what
`read` would return now; a hit only skips transferring and parsing the log.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from prometheus_client import Counter
from redis.asyncio import Redis

from spartan import naming
from spartan.cache import MemoryBackend, lru_cache
from spartan.errors import InvalidArgument, Unavailable
from spartan.redis_conn import text
from spartan.redis_pipeline import AutoPipeline
from spartan.redis_scripts import script
from spartan.v1 import pb

KEY_PREFIX = "sp:h:{hist}:"
LRU_KEY = KEY_PREFIX + "lru"
TICK_KEY = KEY_PREFIX + "tick"

_SERVER_FIELDS = ("offset", "epoch", "sent_at_us")
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

HISTORY_EVICTIONS = Counter("spartan_history_evictions_total", "Conversations whose history the global LRU evicted.")


def meta_key(conversation: str) -> str:
    return f"{KEY_PREFIX}meta:{conversation}"


def log_key(conversation: str) -> str:
    return f"{KEY_PREFIX}log:{conversation}"


def conversation_keys(conversation: str) -> list[str]:
    """KEYS[1..4] of every history script, in the order their headers state."""
    return [meta_key(conversation), log_key(conversation), LRU_KEY, TICK_KEY]


def check_conversation(conversation: str) -> None:
    """Raise InvalidArgument unless `conversation` is a 1:1 or group conversation id."""
    if not conversation:
        raise InvalidArgument("conversation is not set")
    members = naming.dm_members(conversation)
    if members is not None:
        if conversation != naming.dm_conversation(*members):
            raise InvalidArgument(f"conversation {conversation!r} must name its two users in sorted order")
        return
    if naming.group_name(conversation) is None:
        raise InvalidArgument(f"malformed conversation {conversation!r}: expected 'dm:<user>:<user>' or 'group:<name>'")


class HistoryStore:
    """Appends and ranged reads over the Redis history (see module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        per_conversation: int,
        max_conversations: int,
        max_read_limit: int = 1000,
        read_cache_size: int = 4096,
        read_cache_ttl: float | None = None,
        pipeline: AutoPipeline | None = None,
    ) -> None:
        """With `pipeline`, appends and reads share its connection with other concurrent
        commands (the gateway's send path); otherwise each call takes a connection from the pool."""
        if per_conversation < 1 or max_conversations < 1 or max_read_limit < 1:
            raise ValueError("per_conversation, max_conversations and max_read_limit must be at least 1")
        self.redis = redis
        self.per_conversation = per_conversation
        self.max_conversations = max_conversations
        self.max_read_limit = max_read_limit
        self.evictions = 0  # conversations this instance evicted (for metrics)
        runner = pipeline or redis
        self._append_script = script(runner, "history_append")
        self._read_script = script(runner, "history_read")
        self._touch_script = script(runner, "history_touch")
        self.read_cache_size = read_cache_size
        self._read_at = lru_cache(
            backend=MemoryBackend(max(read_cache_size, 1), ttl=read_cache_ttl),
            name="history_read",
            key=_position_key,
            encode=_copy_response,
            decode=_copy_response,
        )(self._read_at_position)

    async def append(self, message: pb.Message) -> pb.SendAck:
        """Store `message` at the next offset of `message.conversation`."""
        if message.offset or message.epoch or message.sent_at_us:
            message = pb.Message.FromString(message.SerializeToString())
            for name in _SERVER_FIELDS:
                message.ClearField(name)
        ack = await self.append_raw(message.conversation, message.SerializeToString())
        ack.id = message.id
        return ack

    async def append_raw(self, conversation: str, payload: bytes) -> pb.SendAck:
        """Store already-serialized message bytes (without offset/epoch/sent_at_us).

        The returned ack has `id` empty: the caller knows the message id it sent.
        """
        check_conversation(conversation)
        args: list[Any] = [payload, self.per_conversation, self.max_conversations, conversation, KEY_PREFIX]
        offset, epoch, sent_at_us, evicted = await self._call(
            self._append_script, conversation_keys(conversation), args
        )
        if evicted:
            self.evictions += int(evicted)
            HISTORY_EVICTIONS.inc(int(evicted))
        return pb.SendAck(conversation=conversation, offset=int(offset), epoch=text(epoch), sent_at_us=int(sent_at_us))

    async def read(self, conversation: str, after_offset: int = 0, limit: int = 0) -> pb.HistoryResponse:
        """Held messages with offset > after_offset, oldest first, at most `limit` (0: all)."""
        check_conversation(conversation)
        self.check_read_range(after_offset, limit)
        last, epoch, first, framed_messages = await self._call(
            self._read_script, conversation_keys(conversation), [conversation, after_offset, limit]
        )
        if after_offset > int(last):
            raise InvalidArgument(f"offset {after_offset} is in the future of conversation {conversation}")
        return build_response(framed_messages, epoch=text(epoch), last_offset=int(last), first_offset=int(first))

    async def read_cached(self, conversation: str, after_offset: int = 0, limit: int = 0) -> pb.HistoryResponse:
        """Same answer as `read`; repeated reads of an unchanged conversation skip the log transfer."""
        if self.read_cache_size <= 0:
            return await self.read(conversation, after_offset, limit)
        check_conversation(conversation)
        self.check_read_range(after_offset, limit)
        last, epoch, held = await self._call(self._touch_script, conversation_keys(conversation), [conversation])
        last, epoch, held = int(last), text(epoch), int(held)
        if after_offset > last:
            raise InvalidArgument(f"offset {after_offset} is in the future of conversation {conversation}")
        if after_offset == last or held == 0:  # nothing to send: no need for the log or the cache
            return pb.HistoryResponse(epoch=epoch, last_offset=last, first_offset=last - held + 1 if held else 0)
        try:
            return await self._read_at(conversation, epoch, last, after_offset, limit)
        except _HistoryMoved as moved:
            return moved.response

    async def _read_at_position(
        self, conversation: str, epoch: str, last: int, after_offset: int, limit: int
    ) -> pb.HistoryResponse:
        """`read`, cached under the position it was asked at; refuses to cache a newer answer."""
        response = await self.read(conversation, after_offset, limit)
        if (response.epoch, response.last_offset) != (epoch, last):
            raise _HistoryMoved(response)
        return response

    def check_read_range(self, after_offset: int, limit: int) -> None:
        if after_offset < 0:
            raise InvalidArgument(f"after_offset must not be negative (got {after_offset})")
        if limit < 0:
            raise InvalidArgument(f"limit must not be negative (got {limit})")
        if limit > self.max_read_limit:
            raise InvalidArgument(f"limit {limit} is above the maximum of {self.max_read_limit}")

    async def _call(self, lua: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await lua(keys=keys, args=args)
        except _REDIS_DOWN as error:
            raise Unavailable(f"history store unavailable: {error}") from error


class _HistoryMoved(Exception):
    """The conversation changed between touch and read: answer with the newer read, cache nothing."""

    def __init__(self, response: pb.HistoryResponse) -> None:
        super().__init__("history moved")
        self.response = response


def _position_key(conversation: str, epoch: str, last: int, after_offset: int, limit: int) -> str:
    return f"{conversation}\x00{epoch}\x00{last}\x00{after_offset}\x00{limit}"


def _copy_response(cached: pb.HistoryResponse) -> pb.HistoryResponse:
    """Stored and handed-out responses are separate copies: no caller can change the cached one."""
    response = pb.HistoryResponse()
    response.CopyFrom(cached)
    return response


def build_response(framed_messages: bytes, *, epoch: str, last_offset: int, first_offset: int) -> pb.HistoryResponse:
    """A HistoryResponse from `history_read.lua`'s messages (already framed as field 1), parsed in one pass."""
    response = pb.HistoryResponse.FromString(framed_messages)
    response.epoch = epoch
    response.last_offset = last_offset
    response.first_offset = first_offset
    return response
