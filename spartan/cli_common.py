"""Command-line handling shared by the service entry points.

Every service accepts `--config PATH` and a few flags for what differs between
replicas on one host (ports); everything else comes from config.yaml and
`SPARTAN_*` environment variables. A bad setting exits with status 2 and one line
naming the key, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import redis.exceptions
from redis.asyncio import Redis

from spartan.config import Config, ConfigError, load_config
from spartan.logs import setup_logging
from spartan.program import argument_parser
from spartan.service_addresses import addresses

log = logging.getLogger("spartan")


def service_arguments(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argument_parser(prog, f"Spartan Messenger {description}.")
    parser.add_argument("--config", help="path to config.yaml (default: ./config.yaml or $SPARTAN_CONFIG)")
    parser.add_argument("--port", type=int, help="gRPC port to listen on (overrides the config)")
    parser.add_argument("--metrics-port", type=int, help="HTTP port for Prometheus /metrics (0: none)")
    return parser


def apply_flags(service: str, config: Config, args: argparse.Namespace) -> Config:
    if args.metrics_port is not None:
        config = dataclasses.replace(config, metrics=dataclasses.replace(config.metrics, port=args.metrics_port))
    if args.port is None:
        return config
    if service == "gateway":
        return dataclasses.replace(config, port=args.port)
    host = addresses(getattr(config.services, service))[0].rpartition(":")[0]
    address: dict[str, Any] = {service: f"{host}:{args.port}"}  # this replica's own port
    return dataclasses.replace(config, services=dataclasses.replace(config.services, **address))


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop when it is installed (measured: ~17% more relay
    throughput per gateway, see docs/PERFORMANCE.md), else on the standard event loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def run_service(
    service: str, parser: argparse.ArgumentParser, argv: list[str] | None, run: Callable[[Config], None]
) -> None:
    args = parser.parse_args(argv)
    try:
        config = apply_flags(service, load_config(args.config), args)
    except ConfigError as exc:
        print(f"spartan-{service}: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(config.log, service)
    try:
        run(config)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        log.error("%s could not start: %s", service, exc)
        raise SystemExit(1) from None


async def wait_for_redis(client: Redis, what: str) -> None:
    """Block until Redis answers PING, logging once while it does not (services may start before Redis).

    An error reply counts as not ready too: a Redis still loading its data, or one in
    protected mode refusing other hosts (fixable at run time with CONFIG SET), must
    not end the service with a traceback. Such a Redis closes the connection after its
    reply, and redis-py on uvloop may then write to the closed transport (RuntimeError
    "the handler is closed"): that is one more way of not being ready, and the pool's
    connections are dropped so the next try opens a fresh one.
    """
    delay = 0.1
    warned = False
    while True:
        try:
            await client.ping()
            if warned:
                log.info("%s: Redis is reachable", what)
            return
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ResponseError,
            OSError,
            RuntimeError,
        ) as exc:
            if isinstance(exc, RuntimeError) and isinstance(client, Redis):
                await client.connection_pool.disconnect()
            if not warned:
                reason = str(exc).split(". ", 1)[0]  # Redis' DENIED reply is a paragraph
                log.warning("%s: waiting for Redis (%s)", what, reason)
                warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
