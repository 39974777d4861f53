"""One Redis pub/sub connection per gateway process, multiplexing every connected stream's channels.

The channels are sharded pub/sub channels (`SSUBSCRIBE`, Redis 7): the scripts that keep
a message publish it with `SPUBLISH` to a channel in their own cluster slot, and a
sharded channel's messages stay on the node that serves its slot. One `SSUBSCRIBE` names
channels of one slot only (a cluster refuses more), so subscriptions go out per slot.

redis-py's `PubSub` must not be subscribed from one task while another reads it,
so a single owner task does both: it executes queued (un)subscribe commands between
reads and dispatches every message to the mailboxes registered for its channel.
Subscriptions are reference-counted across streams, and `subscribe()` returns only
once Redis has acknowledged the SUBSCRIBE, so a stream can tell its client it is
connected knowing nothing published from then on is missed. A channel whose last
stream left counts as unsubscribed at once, and an acknowledgement counts only if no
UNSUBSCRIBE was sent after it: a client that reconnects while its old stream's
UNSUBSCRIBE is on its way gets a SUBSCRIBE behind it, not a dropped channel.

The owner task is supervised: if the connection drops it reconnects with backoff,
resubscribes every channel, and tells every mailbox that it may have missed messages
(`Mailbox.on_outage` when it is lost, `Mailbox.on_gap` when it is back), so streams
tell their clients and recover the gap from history. Each message is parsed
once per gateway, not once per recipient.

Delivering never blocks: a mailbox takes a message with a non-blocking put into its
bounded queue (a full one ends its stream with a status, see `stream_session`). A
burst of many messages for many streams still costs time, so the owner task yields
to the event loop after every `YIELD_EVERY` deliveries: other calls on the gateway
keep being served while a large batch of sender keys or a busy group fans out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.crc import key_slot

from spartan.metrics import PUBSUB_RECONNECTS, REDIS_ERRORS
from spartan.redis_conn import without_retries
from spartan.v1 import pb

log = logging.getLogger("spartan.gateway.hub")

POLL_SECONDS = 0.02  # longest a queued (un)subscribe waits while the connection is idle
YIELD_EVERY = 256  # deliveries between two yields to the event loop
KEEPALIVE_CHANNEL = "sp:gateway:keepalive"  # always subscribed, so a read blocks instead of failing
_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class SubscriptionDropped(redis.exceptions.ConnectionError):
    """Redis ended a subscription the hub did not give up: the connection is no longer worth keeping."""


class Mailbox(Protocol):
    """What the hub delivers to: one per open stream."""

    def deliver(self, message: pb.Message, raw: bytes) -> None: ...

    def on_gap(self) -> None: ...

    def on_outage(self) -> None: ...


class Hub(Protocol):
    """What the gateway needs of its pub/sub: this module's hub on one Redis, `ShardedHub` on a cluster."""

    connected: asyncio.Event

    def start(self) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, mailbox: Mailbox, channels: Iterable[str], timeout: float = 5.0) -> bool:
        """Route `channels` to `mailbox`. True once Redis acknowledged every new subscription; False,
        at once, when the mailbox was told of an outage of their connection that is not over: it is
        told of the gap once they are subscribed, and reads what it missed then."""
        ...

    def unsubscribe(self, mailbox: Mailbox, channels: Iterable[str]) -> None: ...

    @property
    def channel_count(self) -> int: ...


class _Command:
    __slots__ = ("subscribe", "channels", "done")

    def __init__(self, subscribe: bool, channels: list[str]) -> None:
        self.subscribe = subscribe
        self.channels = channels
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class PubSubHub:
    def __init__(
        self, redis: Redis, *, keepalive: str = KEEPALIVE_CHANNEL, on_lost: Callable[[], None] | None = None
    ) -> None:
        """`keepalive`: a channel always subscribed (a cluster node's hub needs one of a slot it serves);
        `on_lost`: called each time the connection is lost (a cluster re-reads its slot map then)."""
        self.redis = redis
        self.keepalive = keepalive
        self.on_lost = on_lost
        self._listener = without_retries(redis)  # every drop of the pub/sub connection must be seen
        self._routes: dict[str, set[Mailbox]] = defaultdict(set)
        self._commands: asyncio.Queue[_Command] = asyncio.Queue()
        self._awaiting_ack: dict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._subscribed: set[str] = set()  # channels acknowledged on the current connection, none leaving
        self._unsubscribing: Counter[str] = Counter()  # UNSUBSCRIBEs sent whose acknowledgement has not come
        self._pending_acks: dict[int, int] = {}  # id(command future) -> acknowledgements still missing
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="pubsub-hub")

    async def close(self) -> None:
        """Stop the owner task; bounded, because a cancellation can be swallowed inside a pending read."""
        self._closing = True
        if self._task:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2 * POLL_SECONDS + 1.0)
        await self._listener.aclose(close_connection_pool=True)

    @property
    def channel_count(self) -> int:
        return len(self._routes)

    async def subscribe(self, mailbox: Mailbox, channels: Iterable[str], timeout: float = 5.0) -> bool:
        """Route `channels` to `mailbox` (see `Hub.subscribe`). A mailbox not told of the outage waits
        for the acknowledgement, up to `timeout`, then gets a ConnectionError."""
        channels = list(dict.fromkeys(channels))
        # Told of the outage: it had a route here when the connection was lost (or joined since, as here).
        told = not self.connected.is_set() and any(mailbox in routes for routes in self._routes.values())
        for channel in channels:
            self._routes[channel].add(mailbox)
        pending = [channel for channel in channels if channel not in self._subscribed]
        if not pending:
            return True
        command = _Command(True, pending)
        self._commands.put_nowait(command)  # also when told: the routes are resubscribed, this is the same
        if told:
            return False
        try:
            await asyncio.wait_for(asyncio.shield(command.done), timeout)
        except TimeoutError:
            raise redis.exceptions.ConnectionError(
                "timed out waiting for Redis to acknowledge the subscription"
            ) from None
        return True

    def unsubscribe(self, mailbox: Mailbox, channels: Iterable[str]) -> None:
        gone = []
        for channel in channels:
            routes = self._routes.get(channel)
            if routes is None:
                continue
            routes.discard(mailbox)
            if not routes:
                del self._routes[channel]
                gone.append(channel)
        if gone:
            # Not subscribed from now on, for `subscribe`: a stream opening while this UNSUBSCRIBE is
            # queued or on its way must queue a SUBSCRIBE behind it, or Redis would drop its channel
            # right after the stream was told it is connected (a live-looking stream that gets nothing).
            self._subscribed.difference_update(gone)
            self._commands.put_nowait(_Command(False, gone))

    def unsubscribe_all(self, channel: str) -> None:
        """Stop routing `channel` to anyone here (it is followed on another connection now)."""
        for mailbox in list(self._routes.get(channel, ())):
            self.unsubscribe(mailbox, [channel])

    async def _supervise(self) -> None:
        delay = 0.1
        first = True
        while not self._closing:
            pubsub = self._listener.pubsub(ignore_subscribe_messages=False)
            try:
                await self._resubscribe(pubsub)
                if not first:
                    PUBSUB_RECONNECTS.inc()
                    log.info("pub/sub reconnected; resubscribed %d channels", len(self._routes))
                    self._notify_gap()
                first = False
                delay = 0.1
                self.connected.set()
                await self._run(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the hub must outlive anything that breaks its connection
                # Whatever broke (a dropped connection, or redis-py on uvloop writing to a transport
                # Redis closed: RuntimeError), this connection's subscriptions are gone: every stream
                # is told now, and told of the gap once the hub has resubscribed.
                REDIS_ERRORS.labels("pubsub").inc()
                if self.connected.is_set():
                    if isinstance(exc, _DOWN):
                        log.warning("pub/sub connection lost: %s", exc)
                    else:
                        log.exception("pub/sub owner task failed; reconnecting")
                    self._notify_outage()
                self.connected.clear()
                self._subscribed.clear()
                self._unsubscribing.clear()
                if self.on_lost is not None:
                    self.on_lost()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                await _close_quietly(pubsub)

    async def _resubscribe(self, pubsub: PubSub) -> None:
        """On a fresh connection: subscribe every routed channel (and a keepalive channel so reads block)."""
        await _per_slot(pubsub.ssubscribe, [self.keepalive, *self._routes])

    async def _run(self, pubsub: PubSub) -> None:
        while not self._closing:
            while not self._commands.empty():
                await self._execute(pubsub, self._commands.get_nowait())
            message = await pubsub.get_message(timeout=POLL_SECONDS)
            delivered = 0
            while message is not None:
                delivered += self._handle(message)
                if delivered >= YIELD_EVERY:
                    delivered = 0
                    await asyncio.sleep(0)  # let handlers drain and other calls run between large batches
                message = await pubsub.get_message(timeout=0)

    async def _execute(self, pubsub: PubSub, command: _Command) -> None:
        if command.subscribe:
            wanted = [c for c in command.channels if c in self._routes and c not in self._subscribed]
            if not wanted:
                _resolve(command.done)
                return
            for channel in wanted:
                self._awaiting_ack[channel].append(command.done)
            self._pending_acks[id(command.done)] = len(wanted)
            await _per_slot(pubsub.ssubscribe, wanted)
        else:
            gone = [c for c in command.channels if c not in self._routes]
            if gone:
                self._unsubscribing.update(gone)
                self._subscribed.difference_update(gone)
                await _per_slot(pubsub.sunsubscribe, gone)
            _resolve(command.done)

    def _handle(self, message: dict) -> int:
        """Dispatch one pub/sub message; returns the number of mailboxes it was delivered to."""
        kind = message["type"]
        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        if kind == "smessage":
            raw: bytes = message["data"]
            routes = self._routes.get(channel)
            if not routes:
                return 0
            try:
                parsed = pb.Message.FromString(raw)
            except Exception:  # noqa: BLE001 - a malformed publish must not stop delivery to others
                log.warning("dropped an undecodable message on %s", channel)
                return 0
            mailboxes = tuple(routes)
            for mailbox in mailboxes:
                mailbox.deliver(parsed, raw)
            return len(mailboxes)
        elif kind == "sunsubscribe":
            if not self._unsubscribing[channel] and channel in self._routes:
                # Redis ends a sharded subscription itself when the channel's slot moves to another
                # node (a failover or resharding): the channel must be followed where it went.
                raise SubscriptionDropped(f"Redis dropped the subscription of {channel}: its slot moved")
            self._unsubscribing[channel] -= 1
            if self._unsubscribing[channel] <= 0:
                del self._unsubscribing[channel]
            self._subscribed.discard(channel)
        elif kind == "ssubscribe":
            if not self._unsubscribing[channel]:  # else an UNSUBSCRIBE sent after it is still to come
                self._subscribed.add(channel)
            for done in self._awaiting_ack.pop(channel, ()):
                remaining = self._pending_acks.get(id(done), 1) - 1
                if remaining <= 0:
                    self._pending_acks.pop(id(done), None)
                    _resolve(done)
                else:
                    self._pending_acks[id(done)] = remaining
        return 0

    def _mailboxes(self) -> set[Mailbox]:
        return {m for routes in self._routes.values() for m in routes}

    def _notify_gap(self) -> None:
        for mailbox in self._mailboxes():
            mailbox.on_gap()

    def _notify_outage(self) -> None:
        for mailbox in self._mailboxes():
            mailbox.on_outage()


async def _per_slot(command: Callable[..., Awaitable[object]], channels: Iterable[str]) -> None:
    """`command` once per cluster slot, with that slot's channels."""
    by_slot: dict[int, list[str]] = defaultdict(list)
    for channel in channels:
        by_slot[key_slot(channel.encode())].append(channel)
    for same_slot in by_slot.values():
        await command(*same_slot)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()
    except Exception:  # noqa: BLE001
        pass
