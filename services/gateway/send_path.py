"""The send path: everything `SendMsg` and `SendSenderKeys` do, and the Redis connection they share.

A send first takes a token from the sender's `send` bucket (`token_bucket.lua`), so a
full bucket answers RESOURCE_EXHAUSTED before anything else is looked at, then checks
the message, then appends it to the delivery log (`delivery_append.lua`, which also
publishes it on the conversation's channel; a 1:1 conversation's first message on a
gateway makes sure both users' streams follow that channel first, `_start_dm`) and to
the recent-history cache (`history_append.lua`). The rate check and both appends go
through one `AutoPipeline`: the appends of one send leave in the same write, and
concurrent sends share the connection instead of a pool. The history store knows
nothing of buckets: the rate decision is taken here, before it is called.

Sender keys travel apart from chat messages (the key inbox) and take one token per
key from their own `sender_keys` bucket, after the checks that cost nothing and
before the membership lookup, so one call cannot carry more keys than many calls may.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence

import redis.exceptions
from redis.asyncio import Redis

from services.gateway.groups import GroupDirectory
from services.gateway.key_inbox import SenderKeyInbox
from services.history.main import make_store
from spartan import naming
from spartan.config import Config
from spartan.delivery_log import DeliveryLog
from spartan.errors import InvalidArgument, Unavailable
from spartan.history_store import HistoryStore
from spartan.metrics import MESSAGES_SENT
from spartan.ratelimit import RateLimiter, RateLimits, policies_from_config
from spartan.redis_conn import is_cluster
from spartan.redis_pipeline import AutoPipeline
from spartan.v1 import pb
from spartan.validation import check_body, check_message_id, check_user

SENDABLE = {pb.CHAT, pb.SENDER_KEY}
KIND_NAMES = {value: name.lower() for name, value in pb.Kind.items()}
# Key distribution follows membership changes, not typing: its own budget, counted in keys (one per
# recipient) so that one call cannot carry more than many calls may; four full rotations a minute.
SENDER_KEY_ROTATIONS_PER_MINUTE = 4
DRAINING = "this gateway is shutting down; reconnect and send again"
STARTED_DMS_KEPT = 65536  # conversations a gateway remembers having started; one forgotten is started again

log = logging.getLogger("spartan.gateway")


class SendPath:
    """Rate decision, checks and appends of one gateway's sends (see the module docstring)."""

    def __init__(
        self,
        *,
        config: Config,
        limits: RateLimits,
        delivery: DeliveryLog,
        store: HistoryStore,
        groups: GroupDirectory,
        pipeline: AutoPipeline | None = None,
    ) -> None:
        self.users = frozenset(config.users)
        self.max_message_bytes = config.gateway.max_message_bytes
        self.max_keys_per_batch = config.presence.max_group_members - 1  # one key for each other member
        self.limits = limits
        self.delivery = delivery
        self.store = store
        self.groups = groups
        self.key_inbox = SenderKeyInbox(store.redis, self.users, self.max_message_bytes)
        self.pipeline = pipeline
        self.draining = False
        self._started_dms: OrderedDict[str, None] = OrderedDict()  # 1:1 conversations started here (see _start_dm)

    async def send(self, user: str, request: pb.Message) -> pb.SendAck:
        """Acknowledged means kept in the delivery log (and published) for every recipient."""
        await self.limits.take("send", user)
        if self.draining:
            raise Unavailable(DRAINING)
        check_message_id(request.id)
        check_body(request.body, self.max_message_bytes)
        if request.kind not in SENDABLE:
            raise InvalidArgument(
                "only chat messages and sender keys can be sent; use the request RPCs for the rest", field="kind"
            )
        if request.kind == pb.SENDER_KEY:
            sent_at_us = await self._store_sender_keys(user, request.group, [request], batch=False)
            return pb.SendAck(
                id=request.id, conversation=naming.group_conversation(request.group), sent_at_us=sent_at_us
            )
        conversation = await self._route(user, request)
        recipient = "" if request.group else request.recipient  # a group message reaches the group's members
        started_before = conversation in self._started_dms
        if not request.group:
            await self._start_dm(conversation)
        payload = pb.Message(
            id=request.id,
            kind=request.kind,
            sender=user,
            recipient=recipient,
            group=request.group,
            body=request.body,
            conversation=conversation,
        ).SerializeToString()
        # Both appends go out in the same pipelined write: the cache's is not waited for before the log's.
        cached = asyncio.ensure_future(self.store.append_raw(conversation, payload))
        try:
            stored = await self.delivery.append(conversation, payload, sender=user)
        finally:
            await _cache_quietly(cached)
        if stored.offset == 1 and started_before and not request.group:
            await self._restart_dm(conversation)  # Redis lost its data (a new epoch): the index went with it
        MESSAGES_SENT.labels(KIND_NAMES[request.kind]).inc()
        return pb.SendAck(
            id=request.id,
            conversation=conversation,
            offset=stored.offset,
            epoch=stored.epoch,
            sent_at_us=stored.sent_at_us,
        )

    async def send_sender_keys(self, user: str, group: str, keys: Sequence[pb.Message]) -> int:
        """`SendSenderKeys`: keep and publish each sealed key; returns how many were stored."""
        if self.draining:
            raise Unavailable(DRAINING)
        await self._store_sender_keys(user, group, list(keys), batch=True)
        return len(keys)

    async def _route(self, user: str, request: pb.Message) -> str:
        """The conversation a message belongs to (its delivery log publishes on that conversation's channel)."""
        if request.group:
            if request.recipient not in ("", request.group):
                raise InvalidArgument(
                    "a group message has no recipient: leave it empty, the group's members receive it",
                    field="recipient",
                )
            await self.groups.require_member(request.group, user)
            return naming.group_conversation(request.group)
        if not request.recipient:
            raise InvalidArgument("a message needs a recipient (user) or a group", field="recipient")
        recipient = check_user(request.recipient, self.users, "recipient", field="recipient")
        if recipient == user:
            raise InvalidArgument("you cannot send messages to yourself", field="recipient")
        return naming.dm_conversation(user, recipient)

    async def _restart_dm(self, conversation: str) -> None:
        """`_start_dm` again after the message is kept: a failure is logged, not a failed send (a retry
        would keep the message twice); the next send of the conversation starts it again."""
        self._started_dms.pop(conversation, None)
        try:
            await self._start_dm(conversation)
        except Unavailable as error:
            log.warning("could not index %s again after Redis lost its data: %s", conversation, error)

    async def _start_dm(self, conversation: str) -> None:
        """Make sure both users' streams follow a 1:1 conversation's channel before its message is kept.

        The conversation goes into both users' index (streams that open from now on subscribe to
        it), then a CONVERSATION message on both users' inbox channels tells the streams open now
        to subscribe and read the conversation's log. Each gateway does this once per conversation
        it has not started yet, so a retry after a failure part way does it all again; a failure
        fails the send (nothing is kept), and the client sends again.
        """
        if conversation in self._started_dms:
            self._started_dms.move_to_end(conversation)
            return
        await self.delivery.remember_dm(conversation)
        start = pb.Message(id=uuid.uuid4().hex, kind=pb.CONVERSATION, conversation=conversation).SerializeToString()
        try:
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for member in naming.dm_members(conversation) or ():
                    pipe.spublish(naming.user_channel(member), start)
                await pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise Unavailable(f"could not start the conversation: {error}") from error
        self._started_dms[conversation] = None
        if len(self._started_dms) > STARTED_DMS_KEPT:
            self._started_dms.popitem(last=False)

    async def _store_sender_keys(self, user: str, group: str, keys: list[pb.Message], *, batch: bool) -> int:
        """Check the batch (cheap checks first), take one rate token per key, then keep and publish each."""
        if not group:
            raise InvalidArgument("a sender key belongs to a group: set group and recipient", field="group")
        if not keys:
            raise InvalidArgument("no sender keys given", field="keys")
        if len(keys) > self.max_keys_per_batch:
            raise InvalidArgument(
                f"at most {self.max_keys_per_batch} sender keys per batch: one for each other member "
                f"of a group of at most {self.max_keys_per_batch + 1}"
            )
        recipients = [key.recipient for key in keys]
        if len(set(recipients)) != len(recipients):
            raise InvalidArgument("a batch names a recipient twice: send one sender key per member")
        await self.limits.take(
            "sender_keys",
            user,
            cost=len(keys),
            limit=SENDER_KEY_ROTATIONS_PER_MINUTE * (self.max_keys_per_batch + 1),
            period=60,
        )
        members = set((await self.groups.require_member(group, user)).members)
        if any(key.recipient not in members for key in keys):
            await self.groups.forget(group)  # a member added a moment ago may not be in the cached list yet
            members = set((await self.groups.require_member(group, user)).members)
        return await self.key_inbox.store(user, group, members, keys, batch=batch)

    async def aclose(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.aclose()


def open_send_path(config: Config, redis: Redis, groups: GroupDirectory) -> SendPath:
    """The gateway's send path: rate checks and appends pipelined on one connection of `redis` (on a Redis
    Cluster, where one connection reaches one node, each script goes to its slot's node by itself)."""
    pipeline = None if is_cluster(redis) else AutoPipeline(redis)
    return SendPath(
        config=config,
        limits=RateLimits(RateLimiter(redis, pipeline=pipeline), policies_from_config(config)),
        delivery=DeliveryLog(redis, config.delivery, pipeline=pipeline),
        store=make_store(config, redis, pipeline),
        groups=groups,
        pipeline=pipeline,
    )


async def _cache_quietly(append: asyncio.Future[pb.SendAck]) -> None:
    """The recent-history cache is a cache: a failed write there is logged, never a failed send."""
    try:
        await append
    except Exception as error:  # noqa: BLE001 - the delivery log has the message; the cache may miss it
        log.warning("recent-history cache append failed: %s", error)
