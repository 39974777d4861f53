"""Paces stream opens, so a reconnect storm does not starve the messages of open streams.

Opening a stream costs a presence call, a subscription, a lease and a catch-up read per
conversation. When a gateway dies, thousands of its clients open streams on the others
within a second or two; set up all at once, their steps fill the event loop's queue and
every live message waits behind them (measured in docs/PERFORMANCE.md, "Reconnect
storm"). At most `gateway.max_concurrent_stream_opens` opens are set up at once; the
others wait their turn, first come first served, for at most
`gateway.stream_open_wait_seconds`, then get RESOURCE_EXHAUSTED with a retry-after, on
which the client backs off with jitter and tries again (here or on another gateway).
Live messages on open streams never pass this gate.
"""

from __future__ import annotations

import asyncio

from spartan.errors import RateLimited

BUSY = "this gateway is busy opening other message streams; your client tries again shortly"


class OpenGate:
    def __init__(self, concurrent: int, wait_seconds: float) -> None:
        self._slots = asyncio.Semaphore(concurrent)
        self.wait_seconds = wait_seconds
        self.waiting = 0

    async def enter(self) -> None:
        """Wait for a slot; RateLimited (RESOURCE_EXHAUSTED, retry-after) when none frees in time."""
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_seconds)
        except TimeoutError:
            raise RateLimited(BUSY, retry_after=min(self.wait_seconds, 1.0)) from None
        finally:
            self.waiting -= 1

    def leave(self) -> None:
        self._slots.release()
