"""Acknowledging delivery-log positions to the server, batched.

The server keeps every message until each recipient acknowledged it, so a client
acknowledges what it has (shown, or kept to show later is *not* enough: only what
left the screen's queue). One `Ack` call carries every position that moved since the
last one, at most every `ACK_INTERVAL_SECONDS`, plus one last call when the client
stops. A failed call is simply retried with the next batch: positions only grow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from spartan.errors import SpartanError
from spartan.v1 import pb

log = logging.getLogger("spartan.client")

ACK_INTERVAL_SECONDS = 0.5

SendAck = Callable[[pb.AckRequest], Awaitable[pb.AckResponse]]  # GatewayApi.ack


class Acknowledger:
    def __init__(self, ack: SendAck) -> None:
        self.ack = ack
        self._due: dict[str, tuple[str, int]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="acknowledger")

    def note(self, conversation: str, epoch: str, offset: int) -> None:
        """`conversation` is had up to (epoch, offset): acknowledge it with the next batch."""
        self._due[conversation] = (epoch, offset)
        self._wakeup.set()

    async def flush(self) -> None:
        """Send what is due now (best effort)."""
        if not self._due:
            return
        due, self._due = self._due, {}
        positions = [pb.Cursor(conversation=c, epoch=e, offset=o) for c, (e, o) in due.items()]
        try:
            await self.ack(pb.AckRequest(positions=positions))
        except SpartanError as exc:
            log.debug("acknowledgement failed (%s); it goes with the next one", exc.code.name)
            for conversation, position in due.items():
                self._due.setdefault(conversation, position)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await asyncio.wait_for(self.flush(), 3.0)
        except (TimeoutError, SpartanError):
            pass

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.flush()
            await asyncio.sleep(ACK_INTERVAL_SECONDS)
