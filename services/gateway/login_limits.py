"""Rate limits on the calls anyone may make before logging in: `GetChallenge` and `Login`.

Without a session there is no user to charge, so each attempt takes a token from two
buckets: the peer address's (`peer:<host>`, so one host cannot flood with made-up
names) and the claimed user's (so a botnet cannot hammer one account). Both use the
shared Redis token bucket, exact across gateway replicas; a refusal is
RESOURCE_EXHAUSTED with the retry delay in the message and trailing metadata. The
address bucket is checked first, so a flood from one host costs one Redis call per
attempt and never reaches the user's bucket, the key directory or a signature check.
Behind an L7 proxy every client shares the proxy's address: raise
`auth.login_attempts_per_minute_per_address` there (0 turns that bucket off).
"""
from __future__ import annotations

from redis.asyncio import Redis

from spartan.config import AuthConfig
from spartan.ratelimit import RateLimiter, RatePolicy
from spartan.ratelimit.decorator import peer_host

API = "login"  # GetChallenge and Login share it: a login is two attempts


class LoginLimits:
    def __init__(self, redis: Redis, auth: AuthConfig) -> None:
        self.limiter = RateLimiter(redis)
        self.per_address = _policy(auth.login_attempts_per_minute_per_address)
        self.per_user = _policy(auth.login_attempts_per_minute_per_user)

    async def take(self, peer: str, user: str) -> None:
        """One attempt by `user` from `peer` (grpc's `context.peer()`); raises RateLimited when over a limit."""
        if self.per_address is not None:
            (await self.limiter.check(f"peer:{peer_host(peer)}", API, self.per_address)).enforce(API)
        if self.per_user is not None:
            (await self.limiter.check(user, API, self.per_user)).enforce(API)


def _policy(per_minute: int) -> RatePolicy | None:
    return RatePolicy(rate=float(per_minute), per_seconds=60.0, burst=per_minute) if per_minute > 0 else None
