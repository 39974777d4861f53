"""File descriptors: a gateway raises its open-files limit and keeps its connection cap below it.

Every TCP connection costs a descriptor, and so do the process's own connections to
Redis and the internal services, its log files and the metrics endpoint. A gateway
that runs out of descriptors cannot accept anyone and cannot reach Redis either, so at
start it raises the soft RLIMIT_NOFILE to the hard limit and lowers its connection cap
(`gateway.max_connections`) to leave `reserve` descriptors for its own use: connections
beyond the cap are closed as they are accepted, before the process is starved.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("spartan.gateway")

RESERVED_FDS = 256  # besides the Redis pool: channels, logs, metrics, the listening socket


def raise_open_files_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(configured: int, fd_limit: int, reserve: int) -> int:
    """The connections a process may hold: the configured cap, lowered to leave `reserve` descriptors."""
    available = fd_limit - reserve
    if available < configured:
        log.warning(
            "open-files limit is %d: accepting at most %d connections instead of gateway.max_connections=%d "
            "(raise the limit, e.g. `ulimit -n`, LimitNOFILE= or the container's nofile)",
            fd_limit,
            max(available, 1),
            configured,
        )
        return max(available, 1)
    return configured
