"""Reconnect waits: exponential, jittered, with a server's retry-after as the floor."""
from __future__ import annotations

import random
import statistics

from spartan.client.backoff import Backoff


def test_the_cap_doubles_to_the_maximum_and_resets_after_a_success() -> None:
    backoff = Backoff(0.2, 3.0, draw=lambda: 0.999999)
    waits = [round(backoff.next(), 3) for _ in range(6)]
    assert waits == [0.2, 0.4, 0.8, 1.6, 3.0, 3.0]
    backoff.reset()
    assert round(backoff.next(), 3) == 0.2


def test_clients_cut_at_the_same_instant_spread_their_first_attempt_over_the_whole_cap() -> None:
    rng = random.Random(7)
    first = [Backoff(0.2, 3.0, draw=rng.random).next() for _ in range(2000)]
    assert all(0 <= wait < 0.2 for wait in first)
    # Spread evenly, not bunched: each tenth of the cap holds about a tenth of the clients.
    per_bin = [sum(1 for wait in first if k * 0.02 <= wait < (k + 1) * 0.02) for k in range(10)]
    assert min(per_bin) > 140 and max(per_bin) < 260, per_bin
    assert statistics.pstdev(first) > 0.05


def test_a_retry_after_is_a_floor_with_jitter_on_top() -> None:
    rng = random.Random(3)
    waits = [Backoff(0.2, 3.0, draw=rng.random).next(floor=5.0) for _ in range(500)]
    assert all(5.0 <= wait < 5.2 for wait in waits)
    assert max(waits) - min(waits) > 0.15
