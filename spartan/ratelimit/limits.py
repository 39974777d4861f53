"""`RateLimits`: the rate decision a service is given at construction.

One object pairs the Redis limiter with the configured policies, so a handler
(or `@rate` on its behalf) asks `await limits.take(api, owner)` instead of a
decorator searching the servicer for attributes. A service builds it once and
hands it to whatever takes tokens: the gateway's handlers and its send path share
one, so every bucket is checked the same way, with the same metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

from spartan.ratelimit.bucket import RateLimiter
from spartan.ratelimit.policy import RatePolicy, policy_for, with_overrides


class RateLimits:
    """Take tokens from a user's bucket under the policy configured for an API."""

    def __init__(self, limiter: RateLimiter, policies: Mapping[str, RatePolicy]) -> None:
        """`policies` is what `policies_from_config` returns (`{}`: limiting disabled)."""
        self.limiter = limiter
        self.policies = policies

    def policy(
        self, api: str, *, limit: float | None = None, period: float | None = None, burst: int | None = None
    ) -> RatePolicy | None:
        """The policy `api` runs under, with explicit values replacing the configured ones;
        None when `rate.enabled` is false."""
        configured = policy_for(self.policies, api)
        if configured is None:
            return None
        return with_overrides(configured, limit=limit, period=period, burst=burst)

    async def take(
        self,
        api: str,
        owner: str,
        *,
        cost: int = 1,
        limit: float | None = None,
        period: float | None = None,
        burst: int | None = None,
    ) -> None:
        """Take `cost` tokens from `owner`'s `api` bucket, or raise `RateLimited`
        (RESOURCE_EXHAUSTED with the retry delay); `Unavailable` when Redis cannot decide."""
        policy = self.policy(api, limit=limit, period=period, burst=burst)
        if policy is not None:
            (await self.limiter.check(owner, api, policy, cost)).enforce(api)
