"""A mailbox that records what the pub/sub hub hands it, for unit tests of the hub without a gRPC stream."""
from __future__ import annotations

import asyncio

from spartan.v1 import pb


class RecordingMailbox:
    """Implements the hub's `Mailbox` protocol: keeps every delivery and counts outage and gap notices."""

    def __init__(self, name: str = "box") -> None:
        self.name = name
        self.messages: list[pb.Message] = []
        self.raws: list[bytes] = []
        self.outages = 0
        self.gaps = 0
        self._changed = asyncio.Event()

    def deliver(self, message: pb.Message, raw: bytes) -> None:
        self.messages.append(message)
        self.raws.append(raw)
        self._changed.set()

    def on_gap(self) -> None:
        self.gaps += 1
        self._changed.set()

    def on_outage(self) -> None:
        self.outages += 1
        self._changed.set()

    @property
    def ids(self) -> list[str]:
        return [message.id for message in self.messages]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[pb.Message]:
        """At least `count` deliveries, or a TimeoutError that says how many came."""
        await self.until(lambda: len(self.messages) >= count, timeout,
                          lambda: f"{self.name} got {len(self.messages)} of {count} messages")
        return self.messages

    async def wait_gap(self, timeout: float = 30.0) -> None:
        await self.until(lambda: self.gaps > 0, timeout, lambda: f"{self.name} was never told of a gap")

    async def wait_outage(self, timeout: float = 30.0) -> None:
        await self.until(lambda: self.outages > 0, timeout, lambda: f"{self.name} was never told of an outage")

    async def until(self, done, timeout: float, what) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(what())
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                raise TimeoutError(what()) from None
