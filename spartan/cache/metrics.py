"""Prometheus counters of every `@lru_cache`, labelled by cache name.

They are created once, when this module is first imported, so any number of
decorated functions (tests create many) share them without duplicate
registration errors.
"""

from __future__ import annotations

from prometheus_client import Counter

CACHE_HITS = Counter("spartan_cache_hits_total", "Calls answered from an @lru_cache.", ["cache"])
CACHE_MISSES = Counter("spartan_cache_misses_total", "Calls an @lru_cache had to compute.", ["cache"])
CACHE_EVICTIONS = Counter(
    "spartan_cache_evictions_total", "Entries an @lru_cache evicted to stay within capacity.", ["cache"]
)
