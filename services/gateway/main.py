"""Entry point of a gateway replica (`spartan-gateway`): the public service on `port`."""

from __future__ import annotations

import logging
import os
import socket

from services.gateway.auth import Authenticator
from services.gateway.groups import GroupDirectory
from services.gateway.leases import LeaseKeeper
from services.gateway.send_path import open_send_path
from services.gateway.servicer import SpartanServicer
from services.gateway.sharded_hub import open_hub
from spartan import deployment, redis_conn
from spartan.cli_common import run_async, run_service, service_arguments, wait_for_redis
from spartan.config import Config
from spartan.fd_limit import RESERVED_FDS, connection_cap, raise_open_files_limit
from spartan.rpc.balancing import HISTORY, PRESENCE, service_channel
from spartan.rpc.server import ServiceSpec, serve, server_options
from spartan.rpc.service_auth import service_secret_or_exit, signing_interceptors
from spartan.token_secret import TokenSecretError
from spartan.token_secret import resolve as resolve_token_secret
from spartan.v1 import rpc

log = logging.getLogger("spartan.gateway")


def token_secret(config: Config) -> str:
    try:
        return resolve_token_secret(config.auth)
    except TokenSecretError as exc:
        raise SystemExit(f"spartan-gateway: {exc}") from None


MAX_STRING_CHARS = 256  # longest string field of any public request (names are 32, ids 64)


def public_options(config: Config) -> list[tuple[str, object]]:
    """Server options of the public port: shed connections and streams before descriptors run out."""
    fd_limit = raise_open_files_limit()
    limits = config.gateway
    return [
        *server_options(config, public=True),
        (
            "grpc.max_allowed_incoming_connections",
            connection_cap(limits.max_connections, fd_limit, config.redis.pool_size + RESERVED_FDS),
        ),
        ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
        ("grpc.server_handshake_timeout_ms", int(limits.handshake_timeout_seconds * 1000)),
    ]


async def run(config: Config) -> None:
    secret = token_secret(config)  # refused before anything else starts
    options = public_options(config)  # the open-files limit is raised before any connection is made
    signing = signing_interceptors(service_secret_or_exit("gateway", config))
    gateway_id = config.gateway.instance_id or f"{socket.gethostname()}-{os.getpid()}"
    redis = redis_conn.connect(config.redis)
    await wait_for_redis(redis, "gateway")
    try:
        deployment_id = await deployment.resolve(redis, config.auth.deployment_id)
    except ValueError as exc:  # someone wrote to Redis: refuse to guess
        raise SystemExit(f"spartan-gateway: {exc}; set auth.deployment_id or delete the key") from None
    log.info("deployment id %s", deployment_id)
    presence_channel = service_channel(config.services.presence, PRESENCE, config.tls, signing)
    history_channel = service_channel(config.services.history, HISTORY, config.tls, signing)
    presence = rpc.PresenceStub(presence_channel)
    history = rpc.HistoryStub(history_channel)
    hub = open_hub(redis)
    hub.start()
    leases = LeaseKeeper(presence, gateway_id, config.presence.lease_seconds, config.services.call_timeout_seconds)
    leases.start()
    groups = GroupDirectory(presence, config.services.call_timeout_seconds)
    await hub.subscribe(groups, [groups.channel])
    sends = open_send_path(config, redis, groups)  # every send's rate check and appends, pipelined
    servicer = SpartanServicer(
        config=config,
        auth=Authenticator(config, secret, presence, redis, deployment_id=deployment_id),
        hub=hub,
        leases=leases,
        presence=presence,
        history=history,
        sends=sends,
        groups=groups,
    )

    async def stop() -> None:
        await leases.stop()
        await hub.close()
        await presence_channel.close()
        await history_channel.close()
        await sends.aclose()
        await redis.aclose()

    spec = ServiceSpec(
        name="gateway",
        servicer=servicer,
        service="Spartan",
        host=config.gateway.host,
        port=config.port,
        on_drain=servicer.drain,
        on_stop=stop,
        options=options,
        max_concurrent_rpcs=config.gateway.max_streams + config.gateway.max_inflight_calls,
        max_string_chars=MAX_STRING_CHARS,
    )
    await serve(spec, config)


def main(argv: list[str] | None = None) -> None:
    run_service(
        "gateway",
        service_arguments("spartan-gateway", "gateway (the public service)"),
        argv,
        lambda config: run_async(run(config)),
    )


if __name__ == "__main__":
    main()
