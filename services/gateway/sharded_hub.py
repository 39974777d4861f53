"""The gateway's pub/sub on a Redis Cluster: one `PubSubHub` per primary node, each holding the
channels of the slots that node serves.

A sharded channel's messages stay on the node that serves its slot, so a gateway keeps one
pub/sub connection per primary node that serves any of its channels (not one per channel,
not one to every node). Each node's hub keeps its own guarantees (subscriptions confirmed
before a stream is told it is connected; every loss told as an outage, then a gap).

When a node's connection is lost, or Redis drops a subscription because its slot moved,
the slot map is read again until every channel that node held has a reachable primary:
the channels move to that node's hub (opened on first use), and their streams, told of
the outage by the old hub, are told of the gap once they are subscribed where the slot
is now, so they read what they missed from the delivery log. A failover therefore costs
a stream one `Reconnecting…` / `Reconnected.` pair, and no Spartan process restarts.

Why not redis-py's asyncio `ClusterPubSub` (8.x): it moves shard channels to their new
node by itself, in the background, and polls its node connections in turn. A channel
resubscribed without a word loses what was published while it moved, and the streams on
it are never told to read the delivery log: the loss this module exists to prevent. Each
node here gets the hub that already sees every drop of its connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from services.gateway.hub import KEEPALIVE_CHANNEL, Hub, Mailbox, PubSubHub
from spartan.redis_conn import node_client

log = logging.getLogger("spartan.gateway.hub")

REMAP_SECONDS = 0.5  # between two reads of the slot map while a node's channels have nowhere to go
KEEPALIVE_TRIES = 100_000  # names tried for a keepalive channel in a node's slots (a few hundred suffice)


class ShardedHub:
    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._hubs: dict[str, PubSubHub] = {}  # node name (host:port) -> its hub
        self._node_of: dict[str, str] = {}  # channel -> the node name its subscription is on
        self._routes: dict[str, set[Mailbox]] = defaultdict(set)
        self._remapping: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()

    def start(self) -> None:
        self.connected.set()  # each node's hub connects on first use; a subscription waits for it

    async def close(self) -> None:
        self._closing = True
        if self._remapping is not None:
            self._remapping.cancel()
        await asyncio.gather(*(hub.close() for hub in self._hubs.values()), return_exceptions=True)

    @property
    def channel_count(self) -> int:
        return len(self._routes)

    async def subscribe(self, mailbox: Mailbox, channels: Iterable[str], timeout: float = 5.0) -> bool:
        """Route `channels` to `mailbox`, each on the hub of the node serving its slot (see `Hub.subscribe`):
        a channel of a lost node's slot is moved with the others, and the mailbox told of the gap then."""
        by_node: dict[str, list[str]] = defaultdict(list)
        for channel in dict.fromkeys(channels):
            self._routes[channel].add(mailbox)
            node = self._node_of.get(channel) or self._serving(channel).name
            self._node_of[channel] = node
            by_node[node].append(channel)
        hubs = [(self._hub(node), chans) for node, chans in by_node.items()]
        return all(await asyncio.gather(*(hub.subscribe(mailbox, chans, timeout) for hub, chans in hubs)))

    def unsubscribe(self, mailbox: Mailbox, channels: Iterable[str]) -> None:
        by_node: dict[str, list[str]] = defaultdict(list)
        for channel in channels:
            routes = self._routes.get(channel)
            if routes is None:
                continue
            routes.discard(mailbox)
            by_node[self._node_of[channel]].append(channel)
            if not routes:
                del self._routes[channel]
                del self._node_of[channel]
        for node, chans in by_node.items():
            self._hubs[node].unsubscribe(mailbox, chans)

    def _serving(self, channel: str) -> ClusterNode:
        node = self.cluster.get_node_from_key(channel)
        if node is None:
            raise redis.exceptions.ConnectionError(f"no node of the Redis Cluster serves the slot of {channel}")
        return node

    def _hub(self, node_name: str) -> PubSubHub:
        hub = self._hubs.get(node_name)
        if hub is None:
            node = self.cluster.get_node(node_name=node_name)
            assert node is not None, f"no node {node_name} in the slot map"
            hub = PubSubHub(
                node_client(self.cluster, node.host, int(node.port)),
                keepalive=self._keepalive_for(node_name),
                on_lost=self._remap_soon,
            )
            hub.start()
            self._hubs[node_name] = hub
        return hub

    def _keepalive_for(self, node_name: str) -> str:
        """A channel of a slot the node serves: the hub's always-subscribed channel must be the node's own."""
        for index in range(KEEPALIVE_TRIES):
            name = f"{KEEPALIVE_CHANNEL}:{{{index}}}"
            if self._serving(name).name == node_name:
                return name
        raise LookupError(f"node {node_name} serves no slot")

    def _remap_soon(self) -> None:
        if not self._closing and (self._remapping is None or self._remapping.done()):
            self._remapping = asyncio.get_running_loop().create_task(self._remap(), name="pubsub-remap")

    async def _remap(self) -> None:
        """Read the slot map until every channel is on the node serving its slot, moving those that moved."""
        while not self._closing:
            try:  # a slot with no primary yet (mid-election) is one more round, never the end of this task
                await self.cluster.nodes_manager.initialize()
                moved = [(ch, node) for ch, node in self._node_of.items() if self._serving(ch).name != node]
                for channel, old in moved:
                    await self._move(channel, old)
            except (redis.exceptions.RedisError, OSError) as error:
                log.warning("pub/sub: the cluster's slot map is not settled yet: %s", error)
                await asyncio.sleep(REMAP_SECONDS)
                continue
            stranded = [node for node, hub in self._hubs.items() if not hub.connected.is_set() and hub.channel_count]
            if not stranded:
                self._drop_idle_hubs()
                return
            await asyncio.sleep(REMAP_SECONDS)

    async def _move(self, channel: str, old: str) -> None:
        """Subscribe `channel` where its slot is now, then tell its streams of the gap.

        The gap is told per channel, right after its subscription: a live message of the channel can
        reach a stream only after its gap, whose replay reads what came before (told once per moved
        set of channels instead, a live message could move a stream's position past what the replay
        has not read yet). The stream says `Reconnected.` once however many gaps follow an outage."""
        mailboxes = list(self._routes.get(channel, ()))
        self._hubs[old].unsubscribe_all(channel)
        new = self._serving(channel).name
        self._node_of[channel] = new
        log.info("pub/sub: %s moved from %s to %s", channel, old, new)
        while not self._closing:
            try:
                for mailbox in mailboxes:
                    await self._hub(new).subscribe(mailbox, [channel])
                break
            except redis.exceptions.ConnectionError as error:
                log.warning("pub/sub: %s not subscribed on %s yet: %s", channel, new, error)
                await asyncio.sleep(REMAP_SECONDS)
        for mailbox in mailboxes:
            mailbox.on_gap()  # told of the outage by the old node's hub: now they read what they missed

    def _drop_idle_hubs(self) -> None:
        for node, hub in list(self._hubs.items()):
            if not hub.channel_count and not hub.connected.is_set():
                del self._hubs[node]
                asyncio.get_running_loop().create_task(hub.close(), name="pubsub-hub-close")


def open_hub(redis: Redis | RedisCluster) -> Hub:
    """The gateway's pub/sub for its Redis: one connection to one Redis, one per serving node of a cluster."""
    return ShardedHub(redis) if isinstance(redis, RedisCluster) else PubSubHub(redis)
