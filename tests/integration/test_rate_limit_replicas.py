"""The rate limit is exact across replicas: 20 clients of one user on 3 gateways, hammering for seconds."""
from __future__ import annotations

import asyncio
import time
import urllib.request

import grpc
import pytest

from spartan.errors import SpartanError, trailers_of
from spartan.v1 import pb
from tests.support.refusals import status_of

RATE = 20.0  # tokens per second
BURST = 10
SECONDS = 4.0
CLIENTS = 20


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("clocks", [None, {"gateway-2": "+420s", "gateway-3": "-300s"}],
                         ids=["same-clocks", "skewed-clocks"])
@pytest.mark.on_cluster  # and on a Redis Cluster of 3 primaries and 3 replicas
async def test_accepted_sends_stay_within_burst_plus_rate_times_window(stack_factory, client_factory, clocks) -> None:
    """Between the first and the last accepted send, accepted = burst + rate*T, within a token or two.

    T is read off Redis' own clock (each accepted send's `sent_at_us`, taken by the script
    that stored it right after its token), so a loaded test machine cannot stretch it. The
    senders keep the bucket empty, so no token goes unused: at most one is still accruing at
    the end. With the gateways' clocks minutes apart the result is the same: the bucket
    reads Redis TIME.
    """
    stack = stack_factory(gateways=3, settings={
        "SPARTAN_RATE__RATE": str(RATE), "SPARTAN_RATE__PER_SECONDS": "1", "SPARTAN_RATE__BURST": str(BURST),
        "SPARTAN_MAX_NUM_MESSAGES_PER_USER": "1000"}, clock_offsets=clocks)
    bob = await client_factory("bob", [stack.address(1)], encrypt=False)
    senders = [await client_factory("alice", [stack.address(1 + i % 3)], encrypt=False) for i in range(CLIENTS)]
    accepted = rejected = 0
    stored_at_us: list[int] = []
    retry_after_seen: list[float] = []

    async def hammer(client, deadline: float) -> None:  # type: ignore[no-untyped-def]
        nonlocal accepted, rejected
        while time.monotonic() < deadline:
            try:
                ack = await client.send("bob", "x")
                stored_at_us.append(ack.sent_at_us)
                accepted += 1
            except SpartanError as exc:
                assert exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                trailers = trailers_of(status_of(exc))  # what the server sent
                retry_after_seen.append(float(trailers["retry-after"]))
                assert trailers["ratelimit-limit"] == str(BURST)
                rejected += 1

    started = time.monotonic()
    await asyncio.gather(*(hammer(c, started + SECONDS) for c in senders))
    window = (max(stored_at_us) - min(stored_at_us)) / 1e6  # Redis time, first to last accepted send

    assert window > SECONDS / 2, "the senders did not keep sending for the window"
    # One token may still be accruing at the end; and the first stamp is taken a moment after the first
    # token (the append follows the bucket's script), which a loaded machine stretches by up to one token
    # interval: so within one token below and two above. A limiter that the replicas did not share would
    # accept about three times as many.
    assert BURST + RATE * window - 1 <= accepted <= BURST + RATE * window + 2
    assert rejected > 0 and all(0 < r <= 1 / RATE + 0.01 for r in retry_after_seen)

    sent = sum(metric(stack.metrics_ports[f"gateway-{i}"], 'spartan_messages_sent_total{kind="chat"}')
               for i in (1, 2, 3))
    rejections = sum(metric(stack.metrics_ports[f"gateway-{i}"], 'spartan_rate_limit_rejections_total{api="send"}')
                     for i in (1, 2, 3))
    assert sent == accepted and rejections == rejected
    history = await bob.call("GetHistory", pb.HistoryRequest(peer="alice", limit=1))
    assert history.last_offset == accepted


async def test_every_send_call_costs_a_token_and_a_rejected_send_is_not_stored(stack_factory, client_factory) -> None:
    """A valid 1:1 send takes its token in the script that stores it; refused calls take theirs anyway."""
    stack = stack_factory(gateways=1, settings={"SPARTAN_RATE__APIS": "{send: {rate: 1, per_seconds: 60, burst: 3}}"})
    bob = await client_factory("bob", [stack.address(1)], encrypt=False)
    alice = await client_factory("alice", [stack.address(1)], encrypt=False)
    await alice.send("bob", "first")  # token 1
    refused = [pb.Message(id="m2", kind=pb.CHAT, recipient="nobody", body=b"x"),  # token 2: unknown user
               pb.Message(id="", kind=pb.CHAT, recipient="bob", body=b"x")]  # token 3: no message id
    codes = []
    for request in refused:
        with pytest.raises(SpartanError) as error:
            await alice.call("SendMsg", request)
        codes.append(error.value.code)
    assert codes == [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT]
    for text in ("over the limit", "still over"):
        with pytest.raises(SpartanError) as limited:
            await alice.send("bob", text)
        assert limited.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "try again in" in limited.value.message
    history = await alice.call("GetHistory", pb.HistoryRequest(peer="bob"))
    assert [m.body for m in history.messages] == [b"first"]
    await bob.wait_for(1)
    await asyncio.sleep(0.5)
    assert [r.text for r in bob.received] == ["first"]
    assert metric(stack.metrics_ports["gateway-1"], 'spartan_rate_limit_rejections_total{api="send"}') == 2
