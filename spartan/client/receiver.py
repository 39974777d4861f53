"""Keeps the `ReceiveMsg` stream open: resumes from the client's cursors after any break.

The stream counts as connected only once the gateway sent its initial metadata,
which it does after Redis acknowledged the subscription, so nothing published after
"Connected" can be missed. When the stream breaks (gateway killed, drained, network
cut, too slow) the receiver says so once (with the server's sentence when the server
ended it on purpose, e.g. a stream that fell behind), fails over to the next address
after a jittered wait (spartan.client.backoff; a gateway's `retry-after` is its floor),
logs in again if the token is refused, and reopens the stream with the newest offset
seen per conversation; the gateway replays what was missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc

from spartan.client.backoff import Backoff
from spartan.client.connection import Connection
from spartan.client.explain import retry_after
from spartan.errors import SpartanError, from_rpc_error
from spartan.v1 import pb

log = logging.getLogger("spartan.client")

FATAL = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
EXPLAINED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED)  # ended by the server with a reason
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 3.0
# Gateways refuse more cursors than `gateway.max_resume_cursors` (1000 by default). Conversations
# beyond these resume from what the user acknowledged (messages are de-duplicated by id).
MAX_RESUME_CURSORS = 1000


class Receiver:
    def __init__(
        self,
        conn: Connection,
        handle: Callable[[pb.Message], Awaitable[None]],
        cursors: Callable[[], list[pb.Cursor]],
        notify: Callable[[str], None],
    ) -> None:
        self.conn = conn
        self.handle = handle
        self.cursors = cursors
        self.notify = notify
        self.connected = asyncio.Event()
        self.failed: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="receiver")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait_connected(self, timeout: float) -> None:
        waiter: asyncio.Task[object] = asyncio.create_task(self.connected.wait())
        watched: set[asyncio.Task[object]] = {waiter} | ({self._task} if self._task else set())
        await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not self.connected.is_set():
            raise self.failed or TimeoutError("the server did not open the message stream")

    async def _run(self) -> None:
        backoff = Backoff(FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS)
        reconnecting = False
        while True:
            generation = self.conn.generation
            try:
                await self.conn.ensure_ready()
                assert self.conn.stub is not None
                resume = self.cursors()[:MAX_RESUME_CURSORS]
                call = self.conn.stub.ReceiveMsg(
                    pb.Message(sender=self.conn.user, resume=resume), metadata=self.conn.metadata
                )
                headers = await call.initial_metadata()
                # A refused stream also "returns" initial metadata (empty, with the error in the
                # trailers): only the gateway's header means the subscription is in place.
                if any(key == "x-spartan-gateway" for key, _ in headers or ()):
                    self.connected.set()
                    if reconnecting:
                        self.notify("Reconnected.")
                        reconnecting = False
                    backoff.reset()
                async for message in call:
                    await self.handle(message)
                code, details, floor = grpc.StatusCode.UNAVAILABLE, "stream ended", 0.0
            except (grpc.aio.AioRpcError, SpartanError) as failure:
                error = from_rpc_error(failure) if isinstance(failure, grpc.aio.AioRpcError) else failure
                code, details, floor = error.code, error.message, retry_after(error) or 0.0
            except asyncio.CancelledError:
                raise
            if code in FATAL:
                self.failed = RuntimeError(details)
                self.notify(f"The server closed the message stream: {details}")
                return
            if (
                not self.connected.is_set()
                and code != grpc.StatusCode.UNAVAILABLE
                and code != grpc.StatusCode.UNAUTHENTICATED
            ):
                self.failed = RuntimeError(details)
                return
            if not reconnecting and self.connected.is_set():
                if code in EXPLAINED:
                    self.notify(f"The server ended the message stream: {details}")
                self.notify("Reconnecting…")
                reconnecting = True
            await asyncio.sleep(backoff.next(floor))
            try:
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    await self.conn.login()
                else:
                    await self.conn.failover(generation)
            except SpartanError as exc:
                if exc.code == grpc.StatusCode.UNAUTHENTICATED:
                    # The key itself is refused (e.g. reset by an operator): retrying cannot help.
                    self.failed = RuntimeError(exc.message)
                    self.notify(f"Logged out: {exc.message}")
                    return
                log.debug("reconnect attempt failed: %s", exc.code.name)
