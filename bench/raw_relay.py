"""The upper bound: the least a grpc.aio relay through Redis pub/sub can do, measured in the same run.

    python3 -m bench raw_relay            (via bench.relay, like the project's relay workload)
    python3 -m bench.raw_relay --serve --port P --redis-url URL   (one relay process)

One process serves a unary `Send` that PUBLISHes the request's bytes to the
recipient's channel and a server-streaming `Receive` fed by one pub/sub connection
per process (dispatching to per-stream queues). No authentication, rate limits,
history or validation: everything Spartan does on top of this is what the relay
workload's ratio to this bound measures. Two such processes run like two gateways
(senders on one, receivers on the other), so the path crosses Redis the same way.
It reuses `spartan.v1.Message` on the wire so the load generators are the same.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from redis.asyncio import BlockingConnectionPool, Redis

from bench.stack import ROOT, ServiceStack, free_port
from spartan.cli_common import run_async
from spartan.v1 import pb

SERVICE = "bench.RawRelay"
RAW_SEND = f"/{SERVICE}/Send"
RAW_RECEIVE = f"/{SERVICE}/Receive"
CHANNEL_PREFIX = "raw:"


class RawRelay:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.queues: dict[str, set[asyncio.Queue[bytes]]] = defaultdict(set)
        self.acks: dict[str, asyncio.Future[None]] = {}
        self.commands: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        """The one owner of the pub/sub connection: (un)subscribes between reads and dispatches."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(CHANNEL_PREFIX + "keepalive")
        while True:
            while not self.commands.empty():
                subscribe, channel = self.commands.get_nowait()
                await (pubsub.subscribe(channel) if subscribe else pubsub.unsubscribe(channel))
            message = await pubsub.get_message(timeout=0.02)
            while message is not None:
                channel = message["channel"].decode()
                if message["type"] == "message":
                    for queue in self.queues.get(channel, ()):
                        queue.put_nowait(message["data"])
                elif message["type"] == "subscribe" and channel in self.acks:
                    self.acks.pop(channel).set_result(None)
                message = await pubsub.get_message(timeout=0)

    async def send(self, request: pb.Message, context: grpc.aio.ServicerContext) -> pb.SendAck:
        await self.redis.publish(CHANNEL_PREFIX + request.recipient, request.SerializeToString())
        return pb.SendAck(id=request.id)

    async def receive(self, request: pb.Message, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        channel = CHANNEL_PREFIX + request.sender
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.queues[channel].add(queue)
        acknowledged = asyncio.get_running_loop().create_future()
        self.acks[channel] = acknowledged
        self.commands.put_nowait((True, channel))
        try:
            await acknowledged
            await context.send_initial_metadata(())
            while True:
                yield await queue.get()
        finally:
            self.queues[channel].discard(queue)
            if not self.queues[channel]:
                del self.queues[channel]
                self.commands.put_nowait((False, channel))


async def serve(port: int, redis_url: str) -> None:
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=64))
    relay = RawRelay(redis)
    relay.start()
    server = grpc.aio.server()
    handlers = {
        "Send": grpc.unary_unary_rpc_method_handler(relay.send, request_deserializer=pb.Message.FromString,
                                                    response_serializer=pb.SendAck.SerializeToString),
        "Receive": grpc.unary_stream_rpc_method_handler(relay.receive, request_deserializer=pb.Message.FromString,
                                                        response_serializer=bytes),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class RawStack(ServiceStack):
    """A private Redis and N raw relay processes (the counterpart of `SpartanStack`)."""

    def __init__(self, workdir: Path, *, relays: int = 2) -> None:
        super().__init__(workdir)
        self.ports = [free_port() for _ in range(relays)]
        env = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
        for i, port in enumerate(self.ports):
            self.processes.add(f"raw-{i + 1}", [sys.executable, "-m", "bench.raw_relay", "--serve", "--port",
                                                str(port), "--redis-url", self.redis.url], port, env)

    def address(self, relay: int) -> str:
        return f"127.0.0.1:{self.ports[relay - 1]}"

    def pid(self, relay: int) -> int:
        return self.processes.pid(f"raw-{relay}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="run one relay process")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()
    if not args.serve:
        from bench.__main__ import main as bench_main
        bench_main(["raw_relay"])
        return
    try:
        run_async(serve(args.port, args.redis_url))  # the same event loop as the services
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
