"""Presence state in Redis: session leases, chat requests, the public-key directory, groups.

Leases live in one sorted set scored by expiry taken from Redis `TIME`, so every
presence replica agrees on who is online and a user whose gateway died drops out
when its lease runs out. Pending chat requests are a hash per recipient, so a user
who was offline sees them when they connect. Public keys are a hash user -> the
serialized `PublicKeys`, written with HSETNX: the first registration wins. Each
user's current signed prekey is a second hash (user -> serialized `SignedPrekey`),
replaced whenever its owner publishes a new one and merged into what `get_keys`
answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

from redis.asyncio import Redis

from spartan.redis_conn import text
from spartan.redis_scripts import script
from spartan.v1 import pb

LEASES = "sp:p:leases"
KEYS = "sp:p:keys"
PREKEYS = "sp:p:prekeys"


def requests_key(user: str) -> str:
    return f"sp:p:requests:{{{user}}}"


def lease_member(lease: pb.Lease) -> str:
    return f"{lease.user}|{lease.gateway}|{lease.session}"


class PresenceStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._renew = script(redis, "presence_renew")
        self._online = script(redis, "presence_online")

    async def renew(self, leases: Sequence[pb.Lease], ttl_seconds: float) -> None:
        if leases:
            await self._renew(keys=[LEASES], args=[int(ttl_seconds * 1000), *map(lease_member, leases)])

    async def drop(self, lease: pb.Lease) -> None:
        await self.redis.zrem(LEASES, lease_member(lease))

    async def online_users(self) -> set[str]:
        members: Iterable[bytes] = await self._online(keys=[LEASES], args=[])
        return {text(member).split("|", 1)[0] for member in members}

    async def add_request(self, requester: str, recipient: str, message_id: str) -> None:
        await self.redis.hset(requests_key(recipient), requester, message_id)

    async def take_request(self, requester: str, recipient: str) -> bool:
        """Remove a pending request; False if there was none."""
        return bool(await self.redis.hdel(requests_key(recipient), requester))

    async def pending_requests(self, recipient: str) -> list[str]:
        return sorted(text(name) for name in await self.redis.hkeys(requests_key(recipient)))

    async def put_keys(self, keys: pb.PublicKeys) -> pb.PublicKeys:
        """Register keys unless the user has some already; returns what is registered.

        The prekey, if the registration carries one, is not part of it: it is replaced daily (`put_prekey`).
        """
        registered = pb.PublicKeys()
        registered.CopyFrom(keys)
        registered.ClearField("prekey")
        await self.redis.hsetnx(KEYS, keys.user, registered.SerializeToString())
        return await self.get_keys(keys.user) or keys

    async def get_keys(self, user: str) -> pb.PublicKeys | None:
        """The registered keys with the user's current prekey, if they published one."""
        raw, prekey = await self.redis.hget(KEYS, user), await self.redis.hget(PREKEYS, user)
        if not raw:
            return None
        keys = pb.PublicKeys.FromString(cast(bytes, raw))
        if prekey:
            keys.prekey.ParseFromString(cast(bytes, prekey))
        return keys

    async def put_prekey(self, user: str, prekey: pb.SignedPrekey) -> bool:
        """Replace the user's prekey (the caller checked its signature); True if they had none before."""
        return bool(await self.redis.hset(PREKEYS, user, prekey.SerializeToString()))

    async def reset_keys(self, user: str) -> bool:
        removed = bool(await self.redis.hdel(KEYS, user))
        await self.redis.hdel(PREKEYS, user)
        return removed
