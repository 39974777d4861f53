"""The deployment id: configured, or generated once and kept in the deployment's Redis."""
from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from spartan.config import ConfigError, load_config
from spartan.deployment import DEPLOYMENT_KEY, resolve
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.on_cluster  # the same behaviour on one Redis and on a Redis Cluster

ROOT = Path(__file__).resolve().parents[2]


async def test_gateways_sharing_a_redis_agree_on_one_generated_id(redis: Redis) -> None:
    first = await resolve(redis, "")
    assert len(first) == 32 and int(first, 16) >= 0
    assert await resolve(redis, "") == first  # a second gateway (or a restart) reads the same id
    assert await redis.get(DEPLOYMENT_KEY) == first.encode()


async def test_a_configured_id_wins_and_is_not_written(redis: Redis) -> None:
    assert await resolve(redis, "chat.example.org") == "chat.example.org"
    assert await redis.get(DEPLOYMENT_KEY) is None


async def test_a_corrupt_stored_id_stops_the_gateway(redis: Redis) -> None:
    await redis.set(DEPLOYMENT_KEY, "not valid!")
    with pytest.raises(ValueError, match="sp:deployment-id holds 'not valid!', not a deployment id"):
        await resolve(redis, "")


def test_an_invalid_configured_id_is_a_config_error() -> None:
    assert load_config(ROOT / "config.yaml", env={"SPARTAN_AUTH__DEPLOYMENT_ID": "prod-eu.1"}).auth.deployment_id \
        == "prod-eu.1"
    with pytest.raises(ConfigError, match="auth.deployment_id: 'has space' is not valid"):
        load_config(ROOT / "config.yaml", env={"SPARTAN_AUTH__DEPLOYMENT_ID": "has space"})


async def test_a_gateway_refuses_to_start_on_a_corrupt_stored_id_with_one_line(redis_server: RedisServer,
                                                                              redis: Redis) -> None:
    await redis.set(DEPLOYMENT_KEY, "not valid!")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SPARTAN_REDIS__URL": redis_server.url,
           "SPARTAN_AUTH__TOKEN_SECRET": secrets.token_hex(32), "SPARTAN_AUTH__SERVICE_SECRET": secrets.token_hex(32),
           "SPARTAN_GATEWAY__HOST": "127.0.0.1"}
    done = subprocess.run([sys.executable, "-m", "services.gateway.main", "--config", str(ROOT / "config.yaml"),
                           "--port", str(free_port())], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "spartan-gateway: Redis key sp:deployment-id holds 'not valid!', not a deployment id; "
        "set auth.deployment_id or delete the key")
