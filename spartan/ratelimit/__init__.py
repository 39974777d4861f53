"""Distributed rate limiting: a Redis token bucket per (user, api) behind the `@rate` decorator.

- `RateLimiter(redis).check(user, api, policy, cost=1) -> RateDecision`
- `RatePolicy(rate, per_seconds, burst)`, `policies_from_config(cfg)`, `policy_for(policies, api)`
- `@rate("send")` on async gRPC servicer methods (unary or server-streaming)
- `enforce_rate(servicer, api, owner)` for a handler that takes its tokens itself

See docs/RATE_LIMITING.md for the algorithm, the config rules and measured costs.
"""

from spartan.ratelimit.bucket import BucketCheck, RateDecision, RateLimiter, bucket_key, settle, unanswered
from spartan.ratelimit.decorator import enforce_rate, rate
from spartan.ratelimit.policy import DEFAULT_API, RatePolicy, policies_from_config, policy_for, with_overrides

__all__ = [
    "BucketCheck",
    "DEFAULT_API",
    "RateDecision",
    "RateLimiter",
    "RatePolicy",
    "bucket_key",
    "enforce_rate",
    "policies_from_config",
    "policy_for",
    "rate",
    "settle",
    "unanswered",
    "with_overrides",
]
