"""One `serve()` for every service: health checking, reflection, metrics, TLS and graceful drain.

Each service's `main()` only reads config and calls `serve()` with its servicers.
On SIGTERM or SIGINT the health status turns NOT_SERVING (load balancers and
Kubernetes stop routing new calls), the service's `on_drain` hook runs (the gateway
tells open streams to reconnect elsewhere), the server stops accepting calls and
waits up to the grace period for in-flight calls, then the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from spartan.config import Config
from spartan.metrics import start_metrics_server
from spartan.rpc.credentials import server_credentials
from spartan.rpc.registration import add_servicer, full_name

log = logging.getLogger("spartan.server")


@dataclass
class ServiceSpec:
    """What `serve()` needs to know about one service process."""

    name: str  # short name for logs, e.g. "gateway"
    servicer: object  # implements the methods of `spartan.v1.<service>`
    service: str  # the proto service name, e.g. "Spartan"
    host: str
    port: int
    on_drain: Callable[[], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    options: list[tuple[str, object]] = field(default_factory=list)
    max_concurrent_rpcs: int | None = None  # grpc sheds calls beyond this with RESOURCE_EXHAUSTED
    max_string_chars: int | None = None  # public services: longer string fields are refused before the handler
    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)  # internal: caller check


def server_options(config: Config, *, public: bool) -> list[tuple[str, object]]:
    """Channel options: message size from config, keepalive, and connection age on gateways."""
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", config.gateway.max_message_bytes + 16 * 1024),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
    ]
    if public and config.gateway.max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", int(config.gateway.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.gateway.max_connection_age_grace_seconds * 1000)),
        ]
    if not public and config.services.max_connection_age_seconds > 0:  # gateways re-resolve replicas
        options += [
            ("grpc.max_connection_age_ms", int(config.services.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.services.call_timeout_seconds * 1000) + 1000),
        ]
    return options


async def serve(spec: ServiceSpec, config: Config, *, ready: Callable[[int], None] | None = None) -> None:
    """Run the service until SIGTERM/SIGINT, then drain and return."""
    server = grpc.aio.server(
        options=spec.options or server_options(config, public=False),
        maximum_concurrent_rpcs=spec.max_concurrent_rpcs,
        interceptors=spec.interceptors,
    )
    add_servicer(server, spec.servicer, spec.service, spec.max_string_chars)
    full_names = [full_name(spec.service)]
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [*full_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    address = f"{spec.host}:{spec.port}"
    credentials = server_credentials(config.tls)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"{spec.name}: cannot listen on {address} (port in use?)")
    await server.start()
    for name in ("", *full_names):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    start_metrics_server(config.metrics.host, config.metrics.port)
    log.info("%s listening on %s:%d%s", spec.name, spec.host, port, " (TLS)" if credentials else "")
    if ready:
        ready(port)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    serving = asyncio.create_task(server.wait_for_termination())
    stop_wait = asyncio.create_task(stopping.wait())
    await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()

    grace = config.shutdown.grace_seconds
    log.info("%s draining (grace %.1fs)", spec.name, grace)
    await health.enter_graceful_shutdown()
    if spec.on_drain:
        try:
            await asyncio.wait_for(spec.on_drain(), timeout=max(grace / 2, 0.1))
        except Exception:  # noqa: BLE001 - drain is best effort, the stop below is not
            log.exception("%s: drain hook failed", spec.name)
    await server.stop(grace)
    if spec.on_stop:
        await spec.on_stop()
    serving.cancel()
    log.info("%s stopped", spec.name)
