"""Group membership as the gateway sees it: cached with `@lru_cache`, invalidated on every change.

Every group send and group history read checks membership, so the gateway keeps
an in-process LRU of `GroupInfo` from the presence service. It never trusts a stale
entry for long: the directory is itself a hub mailbox on the channel where presence
announces every membership change and drops the group's entry when one arrives; after
a pub/sub gap it drops everything. A short TTL bounds the damage of anything missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from spartan.cache import lru_cache
from spartan.errors import PermissionDenied
from spartan.naming import GROUP_CHANGES_CHANNEL
from spartan.v1 import pb, rpc
from spartan.validation import check_name

CACHE_TTL_SECONDS = 5.0


class GroupDirectory:
    channel = GROUP_CHANGES_CHANNEL

    def __init__(self, presence: rpc.PresenceStub, timeout: float, maxsize: int = 4096) -> None:
        self.presence = presence
        self.timeout = timeout
        self._lookup = lru_cache(maxsize=maxsize, ttl=CACHE_TTL_SECONDS, name="gateway_groups")(self._fetch)

    async def _fetch(self, group: str) -> pb.GroupInfo:
        return await self.presence.GetGroup(pb.GroupRequest(group=group), timeout=self.timeout)

    async def get(self, group: str) -> pb.GroupInfo:
        return await self._lookup(check_name(group, "group name"))

    async def require_member(self, group: str, user: str) -> pb.GroupInfo:
        info = await self.get(group)
        if user not in info.members:
            raise PermissionDenied(f"you are not a member of {group}")
        return info

    async def change(self, method: str, request: pb.GroupRequest, actor: str, user: str) -> pb.GroupInfo:
        """AddMember / RemoveMember on behalf of `actor`, with the change record the actor signed."""
        call = getattr(self.presence, method)
        group = check_name(request.group, "group name")
        info = await call(
            pb.GroupRequest(group=group, user=user, change=request.change if request.HasField("change") else None),
            metadata=(("x-spartan-user", actor),),
            timeout=self.timeout,
        )
        await self.forget(group)
        return info

    async def forget(self, group: str) -> None:
        await self._lookup.invalidate(group)

    # Mailbox protocol: presence announces every change on GROUP_CHANGES_CHANNEL.
    def deliver(self, message: pb.Message, raw: bytes) -> None:
        if message.group:
            _background(self.forget(message.group))

    def on_gap(self) -> None:
        _background(self._lookup.cache_clear())

    def on_outage(self) -> None:
        pass


_pending: set[asyncio.Task[None]] = set()


def _background(work: Awaitable[None]) -> None:
    """Run an invalidation soon without blocking the hub (which calls mailboxes synchronously)."""
    task = asyncio.ensure_future(work)
    _pending.add(task)
    task.add_done_callback(_pending.discard)
