"""Entry point of the presence service (`spartan-presence`)."""

from __future__ import annotations

from services.presence.groups import GroupStore
from services.presence.servicer import PresenceServicer
from services.presence.store import PresenceStore
from spartan import redis_conn
from spartan.cli_common import run_async, run_service, service_arguments, wait_for_redis
from spartan.config import Config
from spartan.delivery_log import DeliveryLog
from spartan.enrolment import EnrolmentCodes
from spartan.rpc.server import ServiceSpec, serve
from spartan.rpc.service_auth import CallerCheck, service_secret_or_exit
from spartan.service_addresses import port_of


async def run(config: Config) -> None:
    secret = service_secret_or_exit("presence", config)  # refused before anything else starts
    redis = redis_conn.connect(config.redis)
    await wait_for_redis(redis, "presence")
    log = DeliveryLog(redis, config.delivery)
    directory = PresenceStore(redis)
    groups = GroupStore(redis, config.users, log, directory, config.presence.max_group_members)
    await groups.seed(config.groups)
    servicer = PresenceServicer(config, directory, groups, log, EnrolmentCodes(redis))
    spec = ServiceSpec(
        name="presence",
        servicer=servicer,
        service="Presence",
        host=config.services.listen_host,
        port=port_of(config.services.presence),
        on_stop=redis.aclose,
        interceptors=[CallerCheck(secret)],
    )
    await serve(spec, config)


def main(argv: list[str] | None = None) -> None:
    run_service(
        "presence",
        service_arguments("spartan-presence", "who is online, chat requests, keys, groups"),
        argv,
        lambda config: run_async(run(config)),
    )


if __name__ == "__main__":
    main()
