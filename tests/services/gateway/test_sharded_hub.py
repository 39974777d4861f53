"""The gateway's pub/sub on a private Redis Cluster (3 primaries, 3 replicas): one connection per node
that serves a subscribed channel, and channels followed to the node that serves their slot after a
failover, with the outage and then the gap told to their streams (which then read the delivery log)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.exceptions
from redis.asyncio.cluster import RedisCluster as ClusterClient

from services.gateway.sharded_hub import ShardedHub
from spartan import naming
from spartan.config import RedisConfig
from spartan.redis_conn import connect_cluster
from spartan.v1 import pb
from tests.support.mailbox import RecordingMailbox
from tests.support.redis_cluster import RedisCluster


def chat(text: str) -> bytes:
    return pb.Message(id=text, kind=pb.CHAT, sender="alice", recipient="bob", body=text.encode()).SerializeToString()


@pytest.fixture
async def cluster() -> AsyncIterator[RedisCluster]:
    """A cluster of this test's own: the tests here change which node is primary."""
    made = RedisCluster().start()
    try:
        yield made
    finally:
        made.close()


async def publish(client: ClusterClient, channel: str, data: bytes) -> int:
    """SPUBLISH through the cluster client, which finds the new primary after a failover by itself."""
    for _ in range(100):
        try:
            return int(await client.spublish(channel, data))
        except (redis.exceptions.ConnectionError, redis.exceptions.ClusterDownError):
            await asyncio.sleep(0.1)
    raise TimeoutError(f"could not publish on {channel}")


async def test_one_connection_per_serving_node_and_each_message_once(cluster: RedisCluster) -> None:
    client = await connect_cluster(RedisConfig(), cluster.url)
    hub = ShardedHub(client)
    hub.start()
    box = RecordingMailbox()
    channels = [naming.user_channel(user) for user in ("alice", "bob", "charlie", "eve", "foo", "bar")]
    try:
        await hub.subscribe(box, channels)
        serving = {cluster.primary_of(channel).port for channel in channels}
        assert len(hub._hubs) == len(serving) > 1, "one pub/sub connection per node that serves a channel"
        for channel in channels:
            assert await publish(client, channel, chat(channel)) == 1
        await box.wait_for(len(channels))
        assert sorted(box.ids) == sorted(channels)
    finally:
        await hub.close()
        await client.aclose()


async def test_a_failover_moves_the_channel_to_the_new_primary_and_tells_outage_then_gap(
        cluster: RedisCluster) -> None:
    client = await connect_cluster(RedisConfig(), cluster.url)
    hub = ShardedHub(client)
    hub.start()
    box = RecordingMailbox()
    channel = naming.user_channel("bob")
    old = cluster.primary_of(channel)
    # A second channel on the same node: one outage for both (the stream says `Reconnecting…` once).
    other = next(c for c in (naming.conversation_channel(f"dm:bob:u{i}") for i in range(1000))
                 if cluster.primary_of(c).port == old.port)
    try:
        await hub.subscribe(box, [channel, other])
        assert await publish(client, channel, chat("before")) == 1
        await box.wait_for(1)
        (replica,) = [node for node in cluster.nodes
                      if f"master_port:{old.port}" in cluster.cli(node, "INFO", "replication")]
        # The replica takes over while its primary lives on (TAKEOVER: no handshake with a primary that may
        # not know it yet, so soon after the cluster was made); nothing was written that it lacks.
        assert cluster.cli(replica, "CLUSTER", "FAILOVER", "TAKEOVER") == "OK"
        for _ in range(100):
            if cluster.primary_of(channel).port == replica.port:
                break
            await asyncio.sleep(0.1)
        assert cluster.primary_of(channel).port == replica.port
        await box.wait_outage()  # Redis ended the subscription on the node that is a replica now
        # Each channel, once subscribed where its slot is now, tells of the gap: the stream reads what it missed.
        await box.until(lambda: box.gaps == 2, 30, lambda: f"gaps told: {box.gaps}")
        assert await publish(client, channel, chat("after")) == 1
        assert await publish(client, other, chat("after on the other")) == 1
        await box.wait_for(3)
        assert box.ids == ["before", "after", "after on the other"]
        assert box.outages == 1
    finally:
        await hub.close()
        await client.aclose()
