"""Rate limits on the calls anyone may make before logging in: `GetChallenge` and `Login`.

Without a session there is no user to charge, so each attempt takes a token from two
buckets: the peer address's (`peer:<host>`, so one host cannot flood with made-up
names) and the claimed user's (so a botnet cannot hammer one account). Both use the
shared Redis token bucket, exact across gateway replicas; a refusal is
RESOURCE_EXHAUSTED with the retry delay in the message and trailing metadata. The
address bucket is checked first, so a flood from one host costs one Redis call per
attempt and never reaches the user's bucket, the key directory or a signature check.
Once a bucket refuses, this gateway remembers the refusal until its retry time and
refuses further attempts from that address or for that user in-process, without a
Redis call, so a sustained flood costs each replica little more than gRPC's own work.
Behind an L7 proxy every client shares the proxy's address: raise
`auth.login_attempts_per_minute_per_address` there (0 turns that bucket off).
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from spartan.config import AuthConfig
from spartan.errors import RateLimited
from spartan.ratelimit import RateDecision, RateLimiter, RatePolicy
from spartan.ratelimit.bucket import rejection_message
from spartan.ratelimit.decorator import peer_host

API = "login"  # GetChallenge and Login share it: a login is two attempts
MAX_REMEMBERED = 10_000  # refused addresses and users kept in-process; expired ones go first


class LoginLimits:
    def __init__(self, redis: Redis, auth: AuthConfig) -> None:
        self.limiter = RateLimiter(redis)
        self.per_address = _policy(auth.login_attempts_per_minute_per_address)
        self.per_user = _policy(auth.login_attempts_per_minute_per_user)
        self._refused_until: dict[str, float] = {}  # bucket owner -> monotonic time its refusal ends

    async def take(self, peer: str, user: str) -> None:
        """One attempt by `user` from `peer` (grpc's `context.peer()`); raises RateLimited when over a limit."""
        address = f"peer:{peer_host(peer)}"
        self._refuse_remembered(address)
        self._refuse_remembered(user)
        if self.per_address is not None:
            self._settle(address, await self.limiter.check(address, API, self.per_address))
        if self.per_user is not None:
            self._settle(user, await self.limiter.check(user, API, self.per_user))

    def _refuse_remembered(self, owner: str) -> None:
        until = self._refused_until.get(owner)
        if until is None:
            return
        left = until - time.monotonic()
        if left <= 0:
            del self._refused_until[owner]
            return
        raise RateLimited(rejection_message(API, left), retry_after=left)

    def _settle(self, owner: str, decision: RateDecision) -> None:
        if not decision.allowed and decision.retry_after > 0:
            if len(self._refused_until) >= MAX_REMEMBERED:
                now = time.monotonic()
                self._refused_until = {k: v for k, v in self._refused_until.items() if v > now}
            if len(self._refused_until) < MAX_REMEMBERED:
                self._refused_until[owner] = time.monotonic() + decision.retry_after
        decision.enforce(API)


def _policy(per_minute: int) -> RatePolicy | None:
    return RatePolicy(rate=float(per_minute), per_seconds=60.0, burst=per_minute) if per_minute > 0 else None
