"""`docker compose up` for real: deploy/docker-compose.yml under a real Docker engine.

The commands are the ones docs/DEPLOY.md gives users (`up --build --wait`, `down -v`),
with a project name of this test's own and the published ports moved to free
loopback ports. Real CLI clients chat through the published nginx port, one gateway
container is killed mid-conversation, Prometheus is asked over its HTTP API, and the
generated token secret is checked. Skipped, with the reason, only where no engine
can be had (scripts/docker-engine.sh exits 2: not root and no engine running).
The time each phase took is printed in the test output.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploy.prometheus.render import COMPOSE_REPLICATED, COMPOSE_TARGETS
from tests.compose.clients import PipedClient, acknowledged, enrolment_code, register, shown_from, start_chat, wait_seen
from tests.compose.conftest import deployed
from tests.compose.docker import COMPOSE_FILE, GATEWAYS, ROOT, Deployment, run, wait_for

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1200)]

K8S_PLACEHOLDER_FILE = ROOT / "deploy" / "k8s" / "token-secret.txt"


@pytest.fixture(scope="module")
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    yield from deployed(request, Deployment(project=f"spartan-test-{os.getpid()}"), "compose test")


def test_seed_transcript_through_nginx(deployment: Deployment, workdir: Path) -> None:
    port = deployment.gateway_port
    register("bob", port, workdir, enrolment_code(deployment, "bob"))
    alice = PipedClient("alice", port, workdir, enrolment_code(deployment, "alice"))
    bob: PipedClient | None = None
    try:
        alice.wait_line("User list")
        alice.write("bob")
        alice.wait_line("You are now ready to chat with bob.")
        alice.write("Hey Bob!")
        alice.wait_line("[alice] > Hey Bob!")
        bob = PipedClient("bob", port, workdir)
        bob.wait_line("User list")  # piped, a prompt is printed with its answer
        bob.write("yes")
        bob.wait_line("[alice] Hey Bob!")
        bob.write("Hi Alice!")
        alice.wait_line("[bob] Hi Alice!")
        bob_lines, alice_lines = bob.finish(), alice.finish()
    finally:
        alice.kill()
        if bob:
            bob.kill()
    assert alice_lines == [
        f"[Spartan] Connected to Spartan Server at port {port}.",
        "[Spartan] User list: bob,charlie,eve,foo,bar,baz,qux",
        "[Spartan] Enter a user whom you want to chat with: bob",
        "[Spartan] You are now ready to chat with bob.",
        "[alice] > Hey Bob!",
        "[bob] Hi Alice!",
    ]
    assert bob_lines == [
        f"[Spartan] Connected to Spartan Server at port {port}.",
        "[Spartan] User list: alice,charlie,eve,foo,bar,baz,qux",
        "[Spartan] alice is requesting to chat with you. Enter 'yes' to accept or different user: yes",
        "[Spartan] You are now ready to chat with alice.",
        "[alice] Hey Bob!",
        "[bob] > Hi Alice!",
    ]


def test_prometheus_scrapes_every_target_and_counts_deliveries(deployment: Deployment) -> None:
    expected = {(job, target) for job, targets in COMPOSE_TARGETS.items() for target in targets}
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    replicas = {name: services[name]["deploy"]["replicas"] for name in COMPOSE_REPLICATED}
    assert all(count >= 2 for count in replicas.values()), replicas

    def all_up() -> bool:
        active = deployment.prometheus("targets", state="active")["activeTargets"]
        seen = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in active}
        static = {key for key in seen if key[0] in COMPOSE_TARGETS}
        # Replicas are found through DNS: one target per container, each on its own address.
        found = {name: {instance for job, instance in seen if job == name} for name in COMPOSE_REPLICATED}
        return (static == expected and all(len(found[name]) == replicas[name] for name in replicas)
                and all(health == "up" for health in seen.values()))

    wait_for(all_up, 60, "every Prometheus target up")
    # The transcript above delivered messages; Prometheus' sum matches the gateways' own counters.
    direct = sum(deployment.metric(gateway, "spartan_messages_delivered_total") for gateway in GATEWAYS)
    assert direct >= 1

    def scraped() -> float | None:
        result = deployment.prometheus("query", query="sum(spartan_messages_delivered_total)")["result"]
        return float(result[0]["value"][1]) if result else None

    wait_for(lambda: scraped() == direct, 30, f"Prometheus counting {direct:.0f} delivered messages")


def test_gateway_killed_mid_conversation_loses_no_acknowledged_message(deployment: Deployment,
                                                                       workdir: Path) -> None:
    charlie, eve = start_chat(deployment, workdir, "charlie", "eve")
    try:
        charlie.write("c1 before the kill")
        eve.wait_line("[charlie] c1 before the kill")
        eve.write("e1 before the kill")
        charlie.wait_line("[eve] e1 before the kill")

        # Both streams are open; kill the gateway that holds the most of them.
        streams = wait_for(lambda: (lambda s: s if sum(s.values()) == 2 else None)(
            {g: deployment.metric(g, "spartan_active_streams") for g in GATEWAYS}), 30, "two open streams")
        victim = max(streams, key=lambda g: streams[g])
        run(["docker", "kill", deployment.container(victim)])

        # The shipped rate limit allows 3 sends per 30 s per user: one before the kill, two after.
        charlie_texts, eve_texts = ["c2 after the kill", "c3 after the kill"], ["e2 after the kill", "e3 after the kill"]
        for a, b in zip(charlie_texts, eve_texts):
            charlie.write(a)
            eve.write(b)
        charlie.write("")  # an empty line is not sent; its prompt shows the sends before it finished
        eve.write("")
        charlie.wait_line("[charlie] >", count=3)
        eve.wait_line("[eve] >", count=3)
        charlie_acked = acknowledged(charlie.lines, "[charlie] >", charlie_texts)
        eve_acked = acknowledged(eve.lines, "[eve] >", eve_texts)
        assert (charlie_acked, eve_acked) == (charlie_texts, eve_texts), \
            f"sends failed after {victim} was killed: charlie {charlie.lines}, eve {eve.lines}"
        charlie_lines, eve_lines = wait_seen(charlie, eve, charlie_acked, eve_acked)
    finally:
        charlie.kill()
        eve.kill()
    # Exactly once on screen, in order per conversation.
    received_by_eve = shown_from(eve_lines, "charlie")
    received_by_charlie = shown_from(charlie_lines, "eve")
    assert received_by_eve == [f"[charlie] {t}" for t in ["c1 before the kill", *charlie_texts]]
    assert received_by_charlie == [f"[eve] {t}" for t in ["e1 before the kill", *eve_texts]]
    # Docker restarts no container that `docker kill` stopped; an operator starts it again.
    deployment.compose("start", victim)
    wait_for(lambda: run(["docker", "inspect", "-f", "{{.State.Health.Status}}", deployment.container(victim)])
             .stdout.strip() == "healthy", 90, f"{victim} healthy again")


def test_gateways_share_one_generated_secret(deployment: Deployment) -> None:
    secrets = {g: deployment.exec(g, "cat", "/var/lib/spartan/secret/token_secret").strip() for g in GATEWAYS}
    assert len(set(secrets.values())) == 1, "gateways read different token secrets"
    secret = secrets[GATEWAYS[0]]
    assert len(secret) == 64 and int(secret, 16) >= 0
    assert secret not in (ROOT / "deploy" / "docker-compose.yml").read_text()


def test_a_fresh_deployment_generates_a_different_secret(deployment: Deployment) -> None:
    ours = deployment.exec(GATEWAYS[0], "cat", "/var/lib/spartan/secret/token_secret").strip()
    other = Deployment(project=f"{deployment.project}-other")
    try:
        first = other.compose("run", "--rm", "-T", "token-secret").stdout
        again = other.compose("run", "--rm", "-T", "token-secret").stdout
        theirs = other.compose("run", "--rm", "-T", "--entrypoint", "cat", "token-secret",
                               "/var/lib/spartan/secret/token_secret").stdout.strip()
    finally:
        other.down()
    assert "written to" in first and "kept in" in again
    assert len(theirs) == 64 and theirs != ours


def test_gateway_refuses_the_kubernetes_placeholder(deployment: Deployment) -> None:
    placeholder = K8S_PLACEHOLDER_FILE.read_text().strip()
    done = deployment.compose("run", "--rm", "--no-deps", "-T", "-e", "SPARTAN_AUTH__TOKEN_SECRET_FILE=",
                              "-e", f"SPARTAN_AUTH__TOKEN_SECRET={placeholder}", "gateway-1", check=False)
    output = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode != 0
    refusal = [line for line in output if "spartan-gateway:" in line]
    assert len(refusal) == 1 and "example value from the repository" in refusal[0], output
    assert not any("Traceback" in line for line in output)


def test_a_service_waits_while_redis_refuses_it(deployment: Deployment) -> None:
    """A Redis in protected mode refuses other containers: the service waits with one line, then serves."""
    redis = f"{deployment.project}-protected-redis"
    presence = f"{deployment.project}-waiting-presence"
    run(["docker", "run", "-d", "--rm", "--name", redis, "--network", f"{deployment.project}_default",
         "redis:7", "redis-server", "--protected-mode", "yes", "--save", ""])
    try:
        deployment.compose("run", "-d", "--no-deps", "--name", presence,
                           "-e", f"SPARTAN_REDIS__URL=redis://{redis}:6379/0", "presence")

        def logs() -> str:
            done = run(["docker", "logs", presence], check=False)
            return done.stdout + done.stderr

        wait_for(lambda: "waiting for Redis (DENIED" in logs(), 60, "presence waiting for the refusing Redis")
        time.sleep(2)  # a few retries
        run(["docker", "exec", redis, "redis-cli", "config", "set", "protected-mode", "no"])
        try:
            wait_for(lambda: "presence listening" in logs(), 60, "presence serving once Redis accepts it")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{logs()}") from None
        text = logs()
        assert text.count("waiting for Redis") == 1 and "Traceback" not in text, text
    finally:
        run(["docker", "rm", "-f", "-v", presence, redis], check=False)


def test_down_removes_everything(deployment: Deployment) -> None:
    deployment.down()
    assert deployment.leftovers() == {}
