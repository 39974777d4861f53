"""Auto-pipelining: the commands of many concurrent tasks share one Redis connection.

Every `SendMsg` runs at least one Lua script (rate check, append and publish).
Through a connection pool each call takes a connection, writes one command, waits
for its reply and hands the connection back: a write system call, an event-loop
wake-up and redis-py's pool and retry machinery per command, which made these
calls most of the sending gateway's CPU. `AutoPipeline` instead queues the commands
issued during one event-loop turn, writes them to its own connection in one go and
reads the replies as they stream back, matching them to callers in order (Redis
answers a connection's commands in the order they were sent). No caller waits for
another's reply, and the per-command cost is packing and parsing. This is the
auto-pipelining of clients such as ioredis and Lettuce.

Failure is all-or-nothing per connection, like a pooled connection's: a connection
error or a reply overdue by `timeout` seconds fails every command in flight and
drops the connection; the next command opens a new one. A command that met a
connection error is sent once more on a new connection, as the services' pooled
clients retry; if that fails too the caller gets redis-py's `ConnectionError`, and
after a timeout it gets `TimeoutError` at once (callers map both to UNAVAILABLE).
So an append whose reply was lost may be stored twice, with the same message id,
which clients show once.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from spartan.metrics import PIPELINE_BATCH, REDIS_ERRORS

Command = tuple[Any, ...]


class AutoPipeline:
    """Pipelined commands over one connection of `redis`'s pool (returned to it by `aclose`)."""

    def __init__(self, redis: Redis, *, timeout: float | None = None) -> None:
        self.redis = redis
        pool_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        self.timeout = timeout if timeout is not None else (pool_timeout or 5.0)
        self._connection: AbstractConnection | None = None
        self._outbox: list[tuple[Command, asyncio.Future[Any]]] = []
        self._in_flight: deque[asyncio.Future[Any]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_progress = 0.0
        self._closed = False

    async def execute(self, *args: Any) -> Any:
        """Send one command (e.g. `execute("EVALSHA", sha, 1, key, arg)`) and return its reply.

        Error replies raise the matching `redis.exceptions.ResponseError` subclass.
        """
        try:
            return await self._submit(args)
        except redis_errors.ConnectionError:
            if self._closed:
                raise
            return await self._submit(args)  # once more, on a new connection (as the pooled clients retry)

    async def _submit(self, args: Command) -> Any:
        if self._closed:
            raise redis_errors.ConnectionError("the pipeline is closed")
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outbox.append((args, reply))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())  # runs after this turn's other commands queue up
        return await reply

    async def aclose(self) -> None:
        """Fail what is still in flight and give the connection back to the pool."""
        self._closed = True
        self._fail_all(redis_errors.ConnectionError("the pipeline is closed"))
        for task in (self._writer, self._reader):
            if task is not None:
                task.cancel()
        await self._drop_connection()

    # ------------------------------------------------------------- internals
    async def _write(self) -> None:
        """Write everything queued, batch after batch, until the outbox is empty."""
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                live = [(command, reply) for command, reply in batch if not reply.done()]  # callers gone
                if not live:
                    continue
                connection: AbstractConnection | None = None
                try:
                    connection = await self._connected()
                    packed = connection.pack_commands([command for command, _ in live])
                    PIPELINE_BATCH.observe(len(live))
                    self._expect([reply for _, reply in live])
                    await connection.send_packed_command(packed, check_health=False)
                except Exception as error:  # noqa: BLE001 - whatever broke the write, the batch is lost
                    for _, reply in live:
                        _fail(reply, _as_connection_error(error))
                    if connection is None or self._connection is connection:  # not already dropped by the reader
                        await self._broken(_as_connection_error(error))
        finally:
            self._writer = None

    async def _connected(self) -> AbstractConnection:
        if self._connection is None:
            self._connection = await self.redis.connection_pool.get_connection()
        if not self._connection.is_connected:
            await self._connection.connect()
        return self._connection

    def _expect(self, replies: Sequence[asyncio.Future[Any]]) -> None:
        """Register replies due in this order; start the reader and the overdue check if idle."""
        if not self._in_flight:
            self._last_progress = asyncio.get_running_loop().time()
        self._in_flight.extend(replies)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        if self._watchdog is None:
            self._arm_watchdog()

    async def _read(self) -> None:
        """Hand each reply to its caller, for as long as the connection lives.

        Reading on while nothing is due is what notices a connection Redis closed
        while idle (a restart), so the next command opens a new one instead of
        being written into a dead socket.
        """
        connection = self._connection
        assert connection is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    result: Any = await connection.read_response(timeout=math.inf, disconnect_on_error=False)
                except redis_errors.ResponseError as error_reply:
                    result = error_reply
                except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
                    await self._broken(_as_connection_error(error))
                    return
                self._last_progress = loop.time()
                if not self._in_flight:  # a reply nobody asked for: the stream is out of step
                    await self._broken(redis_errors.ConnectionError("unexpected reply from Redis"))
                    return
                reply = self._in_flight.popleft()
                if isinstance(result, BaseException):
                    _fail(reply, result)
                elif not reply.done():
                    reply.set_result(result)
        finally:
            if self._reader is asyncio.current_task():
                self._reader = None

    def _arm_watchdog(self) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(self.timeout / 4, self._check_overdue)

    def _check_overdue(self) -> None:
        """Fail everything in flight when Redis has not answered for `timeout` seconds."""
        self._watchdog = None
        if not self._in_flight:
            return
        if asyncio.get_running_loop().time() - self._last_progress > self.timeout:
            error = redis_errors.TimeoutError(f"no reply from Redis within {self.timeout:g} s")
            asyncio.get_running_loop().create_task(self._broken(error))
        else:
            self._arm_watchdog()

    async def _broken(self, error: redis_errors.RedisError) -> None:
        """The connection cannot be trusted any more: fail what is in flight and drop it."""
        REDIS_ERRORS.labels("pipeline").inc()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        self._fail_all(error)
        await self._drop_connection()

    def _fail_all(self, error: BaseException) -> None:
        in_flight, self._in_flight = self._in_flight, deque()
        outbox, self._outbox = self._outbox, []
        for reply in [*in_flight, *(reply for _, reply in outbox)]:
            _fail(reply, error)

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)
            await self.redis.connection_pool.release(connection)


def _as_connection_error(error: BaseException) -> redis_errors.RedisError:
    """Redis errors as they are; anything else (an OS error, a socket torn down mid-write) as ConnectionError."""
    if isinstance(error, (redis_errors.ConnectionError, redis_errors.TimeoutError)):
        return error
    return redis_errors.ConnectionError(f"{type(error).__name__}: {error}")


def _fail(reply: asyncio.Future[Any], error: BaseException) -> None:
    if not reply.done():
        reply.set_exception(error)
