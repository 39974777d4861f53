"""The rate limit is exact across replicas: 20 clients of one user on 3 gateways, hammering for seconds."""
from __future__ import annotations

import asyncio
import time
import urllib.request

import grpc
import pytest

from spartan.v1 import pb

RATE = 20.0  # tokens per second
BURST = 10
SECONDS = 4.0
CLIENTS = 20


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("clocks", [None, {"gateway-2": "+420s", "gateway-3": "-300s"}],
                         ids=["same-clocks", "skewed-clocks"])
async def test_accepted_sends_stay_within_burst_plus_rate_times_window(stack_factory, client_factory, clocks) -> None:
    """Over a window T, accepted = burst + rate*T: never more (upper bound), at most about one less.

    T is measured by the clients around the whole run, so it contains the server-side window;
    the lower bound allows for the client-side time before the first and after the last
    request reach Redis (one round trip each, well under the 0.25 s allowed). With the
    gateways' clocks minutes apart the result is the same: the bucket reads Redis TIME.
    """
    stack = stack_factory(gateways=3, settings={
        "SPARTAN_RATE__RATE": str(RATE), "SPARTAN_RATE__PER_SECONDS": "1", "SPARTAN_RATE__BURST": str(BURST),
        "SPARTAN_MAX_NUM_MESSAGES_PER_USER": "1000"}, clock_offsets=clocks)
    bob = await client_factory("bob", [stack.address(1)], encrypt=False)
    senders = [await client_factory("alice", [stack.address(1 + i % 3)], encrypt=False) for i in range(CLIENTS)]
    accepted = rejected = 0
    retry_after_seen: list[float] = []

    async def hammer(client, deadline: float) -> None:  # type: ignore[no-untyped-def]
        nonlocal accepted, rejected
        while time.monotonic() < deadline:
            try:
                await client.send("bob", "x")
                accepted += 1
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                trailers = dict(exc.trailing_metadata() or ())
                retry_after_seen.append(float(trailers["retry-after"]))
                assert trailers["ratelimit-limit"] == str(BURST)
                rejected += 1

    started = time.monotonic()
    await asyncio.gather(*(hammer(c, started + SECONDS) for c in senders))
    window = time.monotonic() - started

    assert accepted <= BURST + RATE * window
    assert accepted >= BURST + RATE * (window - 0.25) - 1
    assert rejected > 0 and all(0 < r <= 1 / RATE + 0.01 for r in retry_after_seen)

    sent = sum(metric(stack.metrics_ports[f"gateway-{i}"], 'spartan_messages_sent_total{kind="chat"}')
               for i in (1, 2, 3))
    rejections = sum(metric(stack.metrics_ports[f"gateway-{i}"], 'spartan_rate_limit_rejections_total{api="send"}')
                     for i in (1, 2, 3))
    assert sent == accepted and rejections == rejected
    history = await bob.call("GetHistory", pb.HistoryRequest(peer="alice", limit=1))
    assert history.last_offset == accepted
