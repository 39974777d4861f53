"""The Redis Cluster profile for real: deploy/docker-compose.yml with deploy/docker-compose.cluster.yml.

Started as docs/DEPLOY.md tells users (`up --build --wait` with both files). Six Redis
nodes form three primaries with a replica each; real CLI clients chat through nginx; the
primary holding their conversation is SIGKILLed mid-chat (after its replica has every
write, so nothing may be missing) and the replica takes over while no Spartan container
restarts, and each client says once that the connection was lost and once that it is back;
the killed node, started again, rejoins as a replica; `down` and `up` again (new containers,
new addresses) keep the cluster and its data. Skipped, with the reason, only
where no engine can be had.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spartan import naming
from spartan.delivery_log import conversation_keys
from tests.compose.clients import acknowledged, shown_from, start_chat, wait_seen
from tests.compose.conftest import deployed
from tests.compose.docker import CLUSTER_FILE, COMPOSE_FILE, Deployment, run, wait_for

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1200)]

NODES = ("redis", "redis-2", "redis-3", "redis-4", "redis-5", "redis-6")
SPARTAN = ("presence", "history", "gateway-1", "gateway-2", "gateway-3")
SLOTS = 16384
LOST = "[Spartan] Lost the connection to the server"  # how a piped client says `Reconnecting…`
BACK = "[Spartan] Connected again."  # and `Reconnected.`
DM_META = conversation_keys(naming.dm_conversation("alice", "bob"))[0]  # its newest offset never expires


@dataclass(frozen=True)
class Node:
    """One line of CLUSTER NODES, with the container behind its address."""

    id: str
    address: str
    container: str
    primary: bool
    replicates: str
    failed: bool
    ranges: tuple[tuple[int, int], ...]

    @property
    def slots(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.ranges)


def container_addresses(deployment: Deployment) -> dict[str, str]:
    found = {}
    for container in deployment.containers(*NODES):
        address = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                       container]).stdout.strip()
        if address:
            found[address] = container
    return found


def slot_ranges(parts: list[str]) -> tuple[tuple[int, int], ...]:
    ranges = []
    for part in parts:
        if not part.startswith("["):  # "[slot->-node]": a slot being migrated
            first, _, last = part.partition("-")
            ranges.append((int(first), int(last or first)))
    return tuple(ranges)


def topology(deployment: Deployment, via: str) -> list[Node]:
    """The cluster as the node in container `via` sees it."""
    containers = container_addresses(deployment)
    lines = run(["docker", "exec", via, "redis-cli", "cluster", "nodes"]).stdout.strip().splitlines()
    nodes = []
    for line in lines:
        node_id, address, flags, master, _ping, _pong, _epoch, _link, *ranges = line.split()
        ip = address.split(":")[0]
        nodes.append(Node(node_id, ip, containers.get(ip, ""), "master" in flags.split(","),
                          "" if master == "-" else master, "fail" in flags.split(","), slot_ranges(ranges)))
    return nodes


def cli(container: str, *args: str) -> str:
    return run(["docker", "exec", container, "redis-cli", *args]).stdout.strip()


def replication(container: str) -> dict[str, str]:
    text = cli(container, "info", "replication")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def gateway_logs(deployment: Deployment) -> str:
    """What the gateways logged at warning level and above, for a failure's message."""
    logs = deployment.compose("logs", "--no-color", "gateway-1", "gateway-2", "gateway-3", check=False).stdout
    return "\n".join(line for line in logs.splitlines() if '"level": "info"' not in line)


def started_at(containers: list[str]) -> dict[str, str]:
    return {c: run(["docker", "inspect", "-f", "{{.State.StartedAt}} {{.RestartCount}}", c]).stdout.strip()
            for c in containers}


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    stack = Deployment(project=f"spartan-cluster-{os.getpid()}", files=(COMPOSE_FILE, CLUSTER_FILE))
    yield from deployed(request, stack, "compose cluster test")


def test_six_nodes_form_three_primaries_with_a_replica_each(cluster: Deployment) -> None:
    nodes = topology(cluster, cluster.container("redis"))
    primaries = [n for n in nodes if n.primary]
    replicas = [n for n in nodes if not n.primary]
    assert len(nodes) == len(NODES) and all(n.container and not n.failed for n in nodes), nodes
    assert len(primaries) == 3 and sum(n.slots for n in primaries) == SLOTS, primaries
    assert sorted(n.replicates for n in replicas) == sorted(n.id for n in primaries), nodes
    env = run(["docker", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}",
               cluster.container("gateway-1")]).stdout
    assert "SPARTAN_REDIS__URL=redis+cluster://redis:6379,redis-2:6379,redis-3:6379" in env.splitlines()


def test_a_primary_killed_mid_chat_is_replaced_and_nothing_acknowledged_is_lost(cluster: Deployment,
                                                                               workdir: Path) -> None:
    spartan_before = started_at(cluster.containers(*SPARTAN))
    alice, bob = start_chat(cluster, workdir, "alice", "bob")
    try:
        alice.write("a1 before the kill")
        bob.wait_line("[alice] a1 before the kill")
        bob.write("b1 before the kill")
        alice.wait_line("[bob] b1 before the kill")

        # The primary holding alice and bob's conversation, once its replica has every write:
        # replication is asynchronous, and this test asserts that nothing at all is missing.
        nodes = topology(cluster, cluster.container("redis"))
        slot = int(cli(cluster.container("redis"), "cluster", "keyslot", DM_META))
        owner = next(n for n in nodes if n.primary and n.serves(slot))
        replica = next(n for n in nodes if n.replicates == owner.id)

        def caught_up() -> bool:
            info = replication(owner.container)
            return info.get("slave0", "").split("offset=")[-1].split(",")[0] == info["master_repl_offset"]

        wait_for(caught_up, 30, "the replica holding every write of its primary")
        assert cli(owner.container, "hget", DM_META, "last") == "2"
        run(["docker", "kill", owner.container])

        # The shipped rate limit allows 3 sends per 30 s per user: one before the kill, two after.
        alice_texts, bob_texts = ["a2 after the kill", "a3 after the kill"], ["b2 after the kill", "b3 after the kill"]
        for a, b in zip(alice_texts, bob_texts):
            alice.write(a)
            bob.write(b)
        alice_lines, bob_lines = wait_seen(alice, bob, alice_texts, bob_texts)
    finally:
        alice.kill()
        bob.kill()
    assert acknowledged(alice_lines, "[alice] >", alice_texts) == alice_texts, alice_lines
    assert acknowledged(bob_lines, "[bob] >", bob_texts) == bob_texts, bob_lines
    # Exactly once on screen, in order: the replica had every write.
    assert shown_from(bob_lines, "alice") == [f"[alice] {t}" for t in ["a1 before the kill", *alice_texts]]
    assert shown_from(alice_lines, "bob") == [f"[bob] {t}" for t in ["b1 before the kill", *bob_texts]]
    # Each stream followed the conversation on the lost node: one outage, said once, then once that it is over.
    # The conversation's epoch changed (a replica took over; it cannot know whether it lacks the newest
    # writes), which each client says, once.
    for lines in (alice_lines, bob_lines):
        assert sum(line.startswith(LOST) for line in lines) == 1, (lines, gateway_logs(cluster))
        assert sum(line == BACK for line in lines) == 1, (lines, gateway_logs(cluster))
        assert sum("may have been lost by the server" in line for line in lines) == 1, lines

    after = topology(cluster, replica.container)
    promoted = next(n for n in after if n.id == replica.id)
    assert promoted.primary and promoted.serves(slot), after
    assert started_at(cluster.containers(*SPARTAN)) == spartan_before, "a Spartan container restarted"

    # Docker restarts no container that `docker kill` stopped; started again, it rejoins as a replica.
    run(["docker", "start", owner.container])
    wait_for(lambda: any(n.id == owner.id and not n.primary and n.replicates == replica.id and not n.failed
                         for n in topology(cluster, owner.container)), 90, "the killed node back as a replica")


def test_down_and_up_again_keep_the_cluster_and_its_messages(cluster: Deployment) -> None:
    """New containers on a new network: the one-shot tells the nodes each other's new addresses."""
    def newest() -> str:
        return cli(cluster.container("redis"), "-c", "hget", DM_META, "last")

    assert newest() == "6"
    addresses = set(container_addresses(cluster))
    cluster.down(volumes=False)
    cluster.up("redis-cluster")  # the nodes and the one-shot: Spartan's own reconnects are tested above
    # `--wait` counts a running one-shot as up; Spartan's services wait for it to finish, and so does this.
    assert run(["docker", "wait", cluster.container("redis-cluster")], timeout=180).stdout.strip() == "0"
    after = set(container_addresses(cluster))
    nodes = topology(cluster, cluster.container("redis"))
    assert {n.address for n in nodes} == after and len(nodes) == len(NODES), nodes
    assert all(not n.failed for n in nodes) and sum(n.slots for n in nodes if n.primary) == SLOTS, nodes
    print("node addresses before and after:", sorted(addresses), sorted(after))
    assert newest() == "6"


def test_down_removes_everything(cluster: Deployment) -> None:
    cluster.down()
    assert cluster.leftovers() == {}
