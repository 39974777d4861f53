"""One-time enrolment codes: the operator decides who may register a user's first keys.

The key pair is the login, and the first keys presented for a user are registered.
Wherever strangers can reach a gateway, that first registration must be the
operator's decision: `spartan-admin enrol USER` (or `reset-keys USER`) asks presence
to issue a random code, which is kept here only as its SHA-256, expiring after
`auth.enrolment_code_ttl_seconds`; the gateway redeems it in one Lua script, so a code
registers keys once. A reset also leaves a marker that closes the window again even
where codes are not otherwise required (the local demo): after a reset only the
holder of the fresh code registers new keys.

Keys (hash-tagged by user, so the script touches one slot):
    sp:enrol:{user}        SHA-256 hex of the open code (PX = its lifetime)
    sp:enrol:{user}:reset  "1" from a key reset until the next enrolment
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets
import time

from redis.asyncio import Redis

from spartan.redis_scripts import script

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud or typed from a note
GROUPS, GROUP_SIZE = 4, 4  # 16 characters, about 79 bits


class Outcome(enum.Enum):
    ACCEPTED = 1  # a valid code was presented (an issued one is now used up)
    REFUSED = 0  # a code is needed and none valid was presented
    NOT_NEEDED = 2  # no code required for this user


def code_key(user: str) -> str:
    return f"sp:enrol:{{{user}}}"


def reset_key(user: str) -> str:
    return f"sp:enrol:{{{user}}}:reset"


def digest(code: str) -> str:
    return hashlib.sha256(normalize(code).encode()).hexdigest()


def normalize(code: str) -> str:
    return code.strip().lower()


def new_code() -> str:
    chars = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_SIZE))
    return "-".join(chars[i : i + GROUP_SIZE] for i in range(0, len(chars), GROUP_SIZE))


class EnrolmentCodes:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._redeem = script(redis, "enrolment_redeem")

    async def issue(self, user: str, ttl_seconds: float, *, after_reset: bool = False) -> tuple[str, int]:
        """A fresh code for `user` (replacing any open one) and when it expires (unix µs)."""
        code = new_code()
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(code_key(user), digest(code), px=max(1, int(ttl_seconds * 1000)))
            if after_reset:
                tx.set(reset_key(user), 1)
            await tx.execute()
        return code, int((time.time() + ttl_seconds) * 1_000_000)

    async def redeem(self, user: str, presented: str, *, required: bool, fixed: str | None) -> Outcome:
        """Whether `user` may register keys with `presented`; a matching issued code is used up.

        `fixed` is the code the config sets for this user (reusable), which also makes a code required.
        """
        fixed_ok = (
            fixed is not None
            and bool(presented)
            and hmac.compare_digest(
                hashlib.sha256(presented.encode()).digest(), hashlib.sha256(fixed.encode()).digest()
            )
        )
        answer = await self._redeem(
            keys=[code_key(user), reset_key(user)],
            args=[
                digest(presented) if presented else "",
                "1" if required or fixed is not None else "0",
                "1" if fixed_ok else "0",
            ],
        )
        return Outcome(int(answer))


def required(mode: str, gateway_host: str) -> bool:
    """Whether every first registration needs a code: `auth.enrolment`, where "auto" means
    "unless the gateway listens on loopback only" (strangers cannot reach it then)."""
    if mode != "auto":
        return mode == "required"
    if gateway_host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(gateway_host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return True
