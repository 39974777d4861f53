"""Metrics as an operator sees them: a real Prometheus scraping a running stack, and naming conventions.

Prometheus runs from the project's rendered scrape config against every service's
`/metrics` port; its HTTP API must report every target up and count the messages a
conversation delivered. Each `/metrics` page is also read directly to check the
metric names the dashboards and alerts rely on, and Prometheus' naming conventions:
a `spartan_` prefix, `_total` on counters, `_seconds` on durations.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from spartan.v1 import pb
from spartan.errors import SpartanError
from tests.support.prometheus import Exposition, Prometheus, scrape
from tests.support.stack import rates

MESSAGES = 12
SENDS = rates(send=100)  # MESSAGES sent back to back by one user


def jobs(stack) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """Scrape targets by service kind: {"gateway": [...], "presence": [...], "history": [...]}."""
    targets: dict[str, list[str]] = {}
    for name, port in stack.metrics_ports.items():
        targets.setdefault(name.split("-")[0], []).append(f"127.0.0.1:{port}")
    return targets


async def test_prometheus_scrapes_every_service_and_counts_deliveries(
        stack_factory, client_factory, tmp_path: Path) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    targets = jobs(stack)
    prometheus = Prometheus(tmp_path / "prometheus", targets, scrape_interval="1s").start()
    try:
        def all_up() -> list[dict[str, object]] | None:
            active = prometheus.active_targets()
            return active if len(active) == 4 and all(t["health"] == "up" for t in active) else None

        active = prometheus.wait_until(all_up, timeout=60)
        assert {t["labels"]["job"] for t in active} == {"gateway", "presence", "history"}  # type: ignore[index]
        assert {t["scrapeUrl"] for t in active} == {f"http://{address}/metrics"
                                                    for addresses in targets.values() for address in addresses}

        alice = await client_factory("alice", [stack.address(1)])
        bob = await client_factory("bob", [stack.address(2)])
        for i in range(MESSAGES):
            await alice.send("bob", f"counted {i}")
        await bob.wait_for(MESSAGES)
        await bob.send("alice", "one back")
        await alice.wait_for(1)

        delivered = settled(prometheus, "sum(spartan_messages_delivered_total)", lambda v: v >= MESSAGES + 1)
        assert delivered >= MESSAGES + 1
        # Prometheus reports exactly what the gateways expose once no more messages move.
        direct = sum(scrape(stack.metrics_ports[f"gateway-{n}"]).total("spartan_messages_delivered_total")
                     for n in (1, 2))
        assert settled(prometheus, "sum(spartan_messages_delivered_total)", lambda v: v == direct) == direct
        assert settled(prometheus, 'sum(spartan_messages_sent_total{kind="chat"})',
                       lambda v: v >= MESSAGES + 1) == MESSAGES + 1
        assert settled(prometheus, 'sum(spartan_active_streams{job="gateway"})', lambda v: v == 2) == 2
        # The services' own `service` label arrives as it is exposed, not renamed by a target label.
        # Wait for a scrape of presence after its first RPC (scrapes of each target run on their own clock).
        def rpc_series() -> list[dict[str, str]] | None:
            found = prometheus.api("series", **{"match[]": "spartan_rpcs_total"})
            return found if {labels["service"] for labels in found} >= {"gateway", "presence"} else None

        series = prometheus.wait_until(rpc_series, timeout=60)
        assert all("exported_service" not in labels for labels in series), series
        assert {labels["service"] for labels in series} == {"gateway", "presence"}, series
    finally:
        prometheus.stop()


def settled(prometheus: Prometheus, expression: str, good: Callable[[float], bool]) -> float:
    """Wait until the instant query `expression` has a value that is `good`; returns it."""
    def probe() -> float | None:
        value = prometheus.query_value(expression)
        return value if value is not None and good(value) else None

    return prometheus.wait_until(probe, timeout=60)


def check_conventions(exposition: Exposition, where: str) -> None:
    ours = {name: kind for name, kind in exposition.types.items() if name.startswith("spartan_")}
    assert ours, f"{where} exposes no spartan_ metrics"
    for name, kind in ours.items():
        assert re.fullmatch(r"spartan_[a-z0-9_]+", name), f"{where}: {name} is not snake_case"
        if name.endswith("_created"):
            continue  # prometheus-client's creation-time gauge that accompanies every counter/histogram
        if kind == "counter":
            assert name.endswith("_total"), f"{where}: counter {name} must end in _total"
        else:
            assert not name.endswith("_total"), f"{where}: {kind} {name} must not end in _total"
        if kind in ("histogram", "summary"):  # durations in seconds, sizes in bytes or in what they count
            assert re.search(r"_(seconds|bytes|commands)$", name), f"{where}: {kind} {name} must end in its unit"
        if re.search(r"(duration|latency|elapsed|_time)(_|$)", name):
            assert re.search(r"_seconds(_total)?$", name), f"{where}: {name} is a duration: end it in _seconds"
        assert not re.search(r"_(ms|us|ns|millis|milliseconds|microseconds|minutes|hours)(_|$)", name), \
            f"{where}: {name} uses a non-base unit"


async def test_metric_names_and_conventions(stack_factory, client_factory) -> None:
    tight = "{send: {rate: 1, per_seconds: 60, burst: 1}}"
    stack = stack_factory(gateways=1, settings={"SPARTAN_RATE__APIS": tight})
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(1)])
    await alice.send("bob", "the only send the bucket allows")
    await bob.wait_for(1)
    with pytest.raises(SpartanError) as rejected:
        await alice.send("bob", "one too many")
    assert rejected.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    for _ in range(2):  # the second lookup of the same group is answered from the gateway's cache
        await alice.call("GetGroup", pb.GroupRequest(group="group1"))

    gateway = scrape(stack.metrics_ports["gateway-1"])
    for name in ("spartan_rpcs_total", "spartan_active_streams", "spartan_messages_sent_total",
                 "spartan_messages_delivered_total", "spartan_delivery_latency_seconds_bucket",
                 "spartan_rate_limit_rejections_total", "spartan_cache_hits_total"):
        assert gateway.values(name), f"the gateway has no {name} samples"
    assert gateway.total("spartan_active_streams") == 2
    assert gateway.total("spartan_messages_sent_total") == 1
    assert gateway.total("spartan_rate_limit_rejections_total") == 1
    assert gateway.total("spartan_cache_hits_total") >= 1
    assert any(labels.get("code") == "RESOURCE_EXHAUSTED" and labels.get("method") == "SendMsg"
               for name, labels, _ in gateway.samples if name == "spartan_rpcs_total")
    # Declared even before the first failure, so dashboards and alerts can refer to it.
    assert gateway.types.get("spartan_redis_errors_total") == "counter"
    assert gateway.types.get("spartan_redis_pipeline_batch_commands") == "histogram"
    assert gateway.total("spartan_redis_pipeline_batch_commands_sum") >= 3  # two rate checks, one append

    for name, port in stack.metrics_ports.items():
        exposition = scrape(port)
        check_conventions(exposition, name)
        assert exposition.types.get("spartan_rpcs_total") == "counter"
        assert exposition.types.get("spartan_rpc_duration_seconds") == "histogram"
        if name != "history":  # history is only read on reconnects, which this test has none of
            assert exposition.values("spartan_rpcs_total"), f"{name} counted no RPCs"
