"""Distributed rate limiting: a Redis token bucket per (user, api) behind the `@rate` decorator.

- `RateLimiter(redis).check(user, api, policy, cost=1) -> RateDecision`
- `RatePolicy(rate, per_seconds, burst)`, `policies_from_config(cfg)`, `policy_for(policies, api)`
- `RateLimits(limiter, policies).take(api, owner, cost=1)`: the decision a service is given
- `@rate("send")` on async gRPC servicer methods (unary or server-streaming) of a servicer
  that holds its `RateLimits` as `limits`

See docs/RATE_LIMITING.md for the algorithm, the config rules and measured costs.
"""

from spartan.ratelimit.bucket import RateDecision, RateLimiter, bucket_key
from spartan.ratelimit.decorator import Limited, rate
from spartan.ratelimit.limits import RateLimits
from spartan.ratelimit.policy import DEFAULT_API, RatePolicy, policies_from_config, policy_for, with_overrides

__all__ = [
    "DEFAULT_API",
    "Limited",
    "RateDecision",
    "RateLimiter",
    "RateLimits",
    "RatePolicy",
    "bucket_key",
    "policies_from_config",
    "policy_for",
    "rate",
    "with_overrides",
]
