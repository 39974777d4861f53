"""Waits between reconnect attempts, with jitter: a dead gateway's clients must not return in step.

Exponential backoff with full jitter: each wait is drawn uniformly between 0 and a cap
that doubles from `first` up to `maximum`, so thousands of clients cut at the same
instant spread their logins and catch-ups over the cap instead of arriving together.
A server that sheds a storm says when to come back (`retry-after`): that is a floor,
with the jitter added on top so the shed clients do not return together either.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(self, first: float, maximum: float, draw: Callable[[], float] = random.random) -> None:
        """`draw`: uniform in [0, 1); tests pass their own."""
        self.first = first
        self.maximum = maximum
        self.cap = first
        self._draw = draw

    def next(self, floor: float = 0.0) -> float:
        """Seconds to wait before the next attempt (at least `floor`); the cap doubles."""
        wait = floor + self._draw() * self.cap
        self.cap = min(self.cap * 2, self.maximum)
        return wait

    def reset(self) -> None:
        """After a success: the next break starts from the shortest wait again."""
        self.cap = self.first
