"""Keeps the presence leases of the streams open on this gateway alive, in batched calls.

Every open stream holds a lease in the presence service; the keeper renews all of
them every third of the lease time, `RENEW_BATCH` leases per `Renew` RPC: one call for
every lease would outgrow the services' message limit (max_message_bytes + 16 KiB) at
about 1,500 streams, and every user of the gateway would show offline. If this gateway
dies the renewals stop and its users show offline once the lease runs out.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from spartan.v1 import pb, rpc

log = logging.getLogger("spartan.gateway.leases")

RENEW_BATCH = 256  # leases per Renew call: ~100 bytes each, far below any message limit


class LeaseKeeper:
    def __init__(self, presence: rpc.PresenceStub, gateway_id: str, lease_seconds: float, timeout: float) -> None:
        self.presence = presence
        self.gateway_id = gateway_id
        self.lease_seconds = lease_seconds
        self.timeout = timeout
        self.leases: dict[str, pb.Lease] = {}
        self._task: asyncio.Task[None] | None = None

    def lease(self, user: str, session_id: str) -> pb.Lease:
        return pb.Lease(
            user=user, gateway=self.gateway_id, session=session_id, ttl_seconds=max(1, round(self.lease_seconds))
        )

    async def open(self, lease: pb.Lease) -> None:
        await self.presence.Connect(lease, timeout=self.timeout)
        self.leases[lease.session] = lease

    def close(self, lease: pb.Lease) -> None:
        """Forget the lease and tell presence in the background (a failure only delays going offline)."""
        self.leases.pop(lease.session, None)
        asyncio.create_task(self._disconnect(lease))

    async def _disconnect(self, lease: pb.Lease) -> None:
        try:
            await self.presence.Disconnect(lease, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            log.info("could not release lease of %s: %s", lease.user, exc.code().name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever(), name="lease-keeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def renew(self) -> None:
        """Renew every lease held now, in batches; a failed batch is logged and the others still go."""
        leases = list(self.leases.values())
        for start in range(0, len(leases), RENEW_BATCH):
            try:
                await self.presence.Renew(
                    pb.LeaseBatch(leases=leases[start : start + RENEW_BATCH]), timeout=self.timeout
                )
            except grpc.aio.AioRpcError as exc:
                log.warning("lease renewal failed (%s); users may briefly show offline", exc.code().name)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            await self.renew()
