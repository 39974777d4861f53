"""Entry point of the history service (`spartan-history`)."""

from __future__ import annotations

from redis.asyncio import Redis

from services.history.servicer import HistoryServicer
from spartan import redis_conn
from spartan.cli_common import run_async, run_service, service_arguments, wait_for_redis
from spartan.config import Config
from spartan.history_store import HistoryStore
from spartan.redis_pipeline import AutoPipeline
from spartan.rpc.server import ServiceSpec, serve
from spartan.rpc.service_auth import CallerCheck, service_secret_or_exit
from spartan.service_addresses import port_of


def make_store(config: Config, redis: Redis, pipeline: AutoPipeline | None = None) -> HistoryStore:
    return HistoryStore(
        redis,
        per_conversation=config.max_num_messages_per_user,
        max_conversations=config.history.max_conversations,
        max_read_limit=config.history.max_read_limit,
        read_cache_size=config.history.cache_size,
        read_cache_ttl=config.history.cache_ttl_seconds or None,
        pipeline=pipeline,
    )


async def run(config: Config) -> None:
    secret = service_secret_or_exit("history", config)  # refused before anything else starts
    redis = redis_conn.connect(config.redis)
    await wait_for_redis(redis, "history")
    servicer = HistoryServicer(make_store(config, redis))
    spec = ServiceSpec(
        name="history",
        servicer=servicer,
        service="History",
        host=config.services.listen_host,
        port=port_of(config.services.history),
        on_stop=redis.aclose,
        interceptors=[CallerCheck(secret)],
    )
    await serve(spec, config)


def main(argv: list[str] | None = None) -> None:
    run_service(
        "history",
        service_arguments("spartan-history", "recent-message history"),
        argv,
        lambda config: run_async(run(config)),
    )


if __name__ == "__main__":
    main()
