"""The distributed token bucket: one atomic Lua call per check, shared by every replica.

`RateLimiter.check(user, api, policy)` runs `token_bucket.lua` on the bucket
`sp:rl:{<user>}:<api>`. All arithmetic and the clock (Redis `TIME`) live in the
script, so any number of gateway replicas, whatever their clocks say, grant a user
no more than burst + rate·T calls over any window T.

When Redis cannot answer (connection refused, timeout, a read-only replica after a
failover, still loading) the check raises `spartan.errors.Unavailable`: a limiter
that cannot decide never lets a call through. Nothing is cached between calls
except the script's SHA (redis-py reloads it on NOSCRIPT), and the client's pool
opens fresh connections, so checks succeed again as soon as Redis is back.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from prometheus_client import Counter, Histogram
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from spartan.errors import RateLimited, Unavailable
from spartan.ratelimit.policy import RatePolicy
from spartan.redis_pipeline import AutoPipeline
from spartan.redis_scripts import script

KEY_PREFIX = "sp:rl:"
SCRIPT_NAME = "token_bucket"

CHECKS = Counter(
    "spartan_rate_limit_checks_total",
    "Rate limit checks by API and result (allowed, rejected, error).",
    ["api", "result"],
)
REJECTIONS = Counter(
    "spartan_rate_limit_rejections_total",
    "Calls rejected by the rate limiter, by API.",
    ["api"],
)
CHECK_SECONDS = Histogram(
    "spartan_rate_limit_check_seconds",
    "Time one rate limit check takes, including the Redis round trip.",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

# Errors that mean "Redis cannot decide right now", as opposed to a bug in the call.
# ConnectionError covers refused/reset connections, BusyLoadingError, MaxConnectionsError
# and an exhausted blocking pool.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.OutOfMemoryError,
    OSError,
)


@dataclass(frozen=True)
class RateDecision:
    """The answer for one check. `retry_after` is 0 when allowed; `limit` is the burst."""

    allowed: bool
    remaining: int
    retry_after: float
    limit: int

    def enforce(self, api: str) -> None:
        """Raise `RateLimited` (RESOURCE_EXHAUSTED with retry-after trailers) unless allowed."""
        if not self.allowed:
            raise RateLimited(
                rejection_message(api, self.retry_after),
                retry_after=self.retry_after,
                limit=self.limit,
                remaining=self.remaining,
            )


def bucket_key(user: str, api: str, prefix: str = KEY_PREFIX) -> str:
    """`sp:rl:{<user>}:<api>`: the hash tag keeps all of a user's buckets in one cluster slot."""
    return f"{prefix}{{{user}}}:{api}"


class RateLimiter:
    """Token-bucket checks against Redis; safe to share across tasks and servicers."""

    def __init__(self, redis: Redis, *, key_prefix: str = KEY_PREFIX, pipeline: AutoPipeline | None = None) -> None:
        """With `pipeline`, checks share its connection with other concurrent commands
        (the gateway's send path); otherwise each check takes a connection from `redis`'s pool."""
        self.redis = redis
        self.key_prefix = key_prefix
        self._script = script(pipeline or redis, SCRIPT_NAME)

    async def check(self, user: str, api: str, policy: RatePolicy, cost: int = 1) -> RateDecision:
        """Take `cost` tokens from the (user, api) bucket if it holds them.

        Raises `ValueError` for a cost outside 1..burst (such a call could never
        pass) and `Unavailable` when Redis cannot answer.
        """
        if cost < 1 or cost > policy.burst:
            raise ValueError(f"cost must be between 1 and the burst ({policy.burst}), got {cost}")
        args = (repr(policy.tokens_per_second), policy.burst, cost)
        started = time.perf_counter()
        try:
            reply = await self._script(keys=[bucket_key(user, api, self.key_prefix)], args=args)
        except UNAVAILABLE_ERRORS as exc:
            CHECK_SECONDS.observe(time.perf_counter() - started)
            CHECKS.labels(api=api, result="error").inc()
            raise Unavailable(f"rate limiter unavailable: {_describe(exc)}") from exc
        CHECK_SECONDS.observe(time.perf_counter() - started)
        decision = _decode(reply)
        if decision.allowed:
            CHECKS.labels(api=api, result="allowed").inc()
        else:
            CHECKS.labels(api=api, result="rejected").inc()
            REJECTIONS.labels(api=api).inc()
        return decision


def rejection_message(api: str, retry_after: float) -> str:
    """E.g. 'rate limit exceeded for send: try again in 1.4s' (rounded up to 0.1 s)."""
    if retry_after < 0:
        return f"rate limit exceeded for {api}: this call costs more than the limit allows"
    seconds = max(math.ceil(retry_after * 10 - 1e-9) / 10, 0.1)
    return f"rate limit exceeded for {api}: try again in {seconds:.1f}s"


def _decode(reply: list[object]) -> RateDecision:
    allowed, remaining, retry_after, limit = reply
    retry_text = retry_after.decode() if isinstance(retry_after, bytes) else str(retry_after)
    return RateDecision(
        allowed=int(allowed) == 1,  # type: ignore[call-overload]
        remaining=int(remaining),  # type: ignore[call-overload]
        retry_after=float(retry_text),
        limit=int(limit),  # type: ignore[call-overload]
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
