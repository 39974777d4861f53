"""The lease keeper against a real presence process: every lease of a busy gateway is renewed.

One `Renew` carrying every lease outgrew the services' message limit at about 1,500
streams (RESOURCE_EXHAUSTED), so every user of such a gateway showed offline. The
keeper renews in batches; 3,000 leases must all be online afterwards, with no warning.
"""
from __future__ import annotations

import logging

import pytest
from redis.asyncio import Redis

from services.gateway.leases import RENEW_BATCH, LeaseKeeper
from services.presence.store import PresenceStore
from spartan.config import TlsConfig
from spartan.rpc.balancing import PRESENCE, service_channel
from spartan.rpc.service_auth import signing_interceptors
from spartan.v1 import rpc

LEASES = 3000  # twice what one call could carry


async def test_a_gateway_with_thousands_of_streams_renews_every_lease(
        stack_factory, caplog: pytest.LogCaptureFixture) -> None:
    stack = stack_factory(gateways=0)
    channel = service_channel(stack.env["SPARTAN_SERVICES__PRESENCE"], PRESENCE, TlsConfig(),
                              signing_interceptors(stack.env["SPARTAN_AUTH__SERVICE_SECRET"]))
    keeper = LeaseKeeper(rpc.PresenceStub(channel), "gateway-1", lease_seconds=30, timeout=10)
    users = [f"user{i:04d}" for i in range(LEASES)]
    keeper.leases = {f"s{i}": keeper.lease(user, f"s{i}") for i, user in enumerate(users)}
    assert LEASES > 2 * RENEW_BATCH
    with caplog.at_level(logging.WARNING, logger="spartan.gateway.leases"):
        await keeper.renew()
    # The lease keeper's own records only: grpc's event-loop callbacks log to `asyncio` on a loaded machine.
    refused = [record.getMessage() for record in caplog.records if record.name == "spartan.gateway.leases"]
    assert not refused, refused
    redis = Redis.from_url(stack.redis.url)
    try:
        assert await PresenceStore(redis).online_users() == set(users)
    finally:
        await redis.aclose()
        await channel.close()
