"""The client's link to the gateways: login with the identity key, calls with the token, failover.

`--server a:1,b:2` names several gateways (or one load balancer). The connection
uses one at a time; when it becomes unavailable the next call or the stream moves to
the next address, logs in again if needed, and carries on. Logging in is proving
possession of the identity key: the gateway's challenge is signed with Ed25519.

Every refusal leaves this module as the project's error (`spartan.errors.from_rpc_error`:
code, sentence, retry delay), so no caller reads gRPC statuses or trailers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc

from spartan.client.backoff import Backoff
from spartan.config import TlsConfig
from spartan.crypto.identity import Identity
from spartan.crypto.prekeys import OwnPrekeys
from spartan.crypto.tokens import login_transcript
from spartan.errors import from_rpc_error
from spartan.rpc.credentials import open_channel
from spartan.v1 import pb, rpc

CALL_TIMEOUT_SECONDS = 10.0
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
TOKEN_REFRESH_MARGIN_US = 60_000_000
FIRST_RETRY_SECONDS = 0.2  # a failed call waits up to this, then up to twice as long, … (spartan.client.backoff)
MAX_RETRY_SECONDS = 2.0


@contextmanager
def as_spartan_errors() -> Iterator[None]:
    """The one place a gRPC status becomes the project's error (code, sentence, retry delay; the
    `AioRpcError` stays as `__cause__`)."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc


class Connection:
    def __init__(
        self,
        addresses: Sequence[str],
        identity: Identity,
        tls: TlsConfig,
        enrolment_code: str = "",
        *,
        server_name: str = "",
        prekeys: OwnPrekeys | None = None,
    ) -> None:
        """`prekeys`: every login publishes the current one (a new one is made daily)."""
        if not addresses:
            raise ValueError("at least one server address is needed")
        self.addresses = list(addresses)
        self.identity = identity
        self.user = identity.user
        self.tls = tls
        self.server_name = server_name  # the name to expect in the gateways' TLS certificate, if not the host
        self.enrolment_code = enrolment_code
        self.prekeys = prekeys
        self.index = 0
        self.generation = 0  # bumps on every failover, so concurrent callers fail over once
        self.channel: grpc.aio.Channel | None = None
        self.stub: rpc.SpartanStub | None = None
        self.token = ""
        self.token_expires_us = 0
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return self.addresses[self.index]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    async def open(self) -> None:
        """Connect and log in, trying each address once; raises the last error (a `SpartanError`)."""
        last: grpc.aio.AioRpcError | None = None
        for _ in range(len(self.addresses)):
            try:
                await self._open_current()
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise from_rpc_error(exc) from exc
                last = exc
                await self._advance()
        assert last is not None
        raise from_rpc_error(last) from last

    async def _open_current(self) -> None:
        if self.channel is None:
            # Each client gets its own TCP connection even when one process runs many
            # (bots, tests): HTTP/2 flow control must not couple their streams.
            self.channel = open_channel(
                self.address, self.tls, [("grpc.use_local_subchannel_pool", 1)], server_name=self.server_name
            )
            self.stub = rpc.SpartanStub(self.channel)
        await self._login()

    async def login(self) -> None:
        """Log in again (a refused or expired token); raises a `SpartanError`."""
        with as_spartan_errors():
            await self._login()

    async def _login(self) -> None:
        assert self.stub is not None
        challenge = await self.stub.GetChallenge(pb.ChallengeRequest(user=self.user), timeout=CALL_TIMEOUT_SECONDS)
        keys = self.identity.public_keys()
        if self.prekeys is not None:
            keys.prekey.CopyFrom(self.prekeys.current())
        transcript = login_transcript(challenge.deployment_id, self.user, challenge.nonce, keys.identity_key)
        signature = self.identity.sign(transcript)
        session = await self.stub.Login(
            pb.LoginRequest(
                user=self.user,
                nonce=challenge.nonce,
                signature=signature,
                keys=keys,
                enrolment_code=self.enrolment_code,
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        self.token = session.token
        self.token_expires_us = session.expires_at_us
        self.deployment_id = challenge.deployment_id

    async def _advance(self) -> None:
        if self.channel is not None:
            # Close in the background with a grace: calls still in flight on the old
            # channel finish (or fail and retry) instead of being cancelled under their caller.
            self._closing.add(asyncio.create_task(self.channel.close(grace=CALL_TIMEOUT_SECONDS)))
            self._closing = {task for task in self._closing if not task.done()}
        self.channel = None
        self.stub = None
        self.index = (self.index + 1) % len(self.addresses)
        self.generation += 1

    async def failover(self, seen_generation: int) -> None:
        """Move to the next address unless another caller already did since `seen_generation`."""
        with as_spartan_errors():
            await self._failover(seen_generation)

    async def _failover(self, seen_generation: int) -> None:
        async with self._lock:
            if self.generation != seen_generation:
                return
            await self._advance()
            await self._open_current()

    async def ensure_ready(self) -> None:
        """Open the current address if a failed failover left none, and renew a token about to expire."""
        with as_spartan_errors():
            await self._ensure_ready()

    async def _ensure_ready(self) -> None:
        if self.stub is None:
            async with self._lock:
                if self.stub is None:
                    await self._open_current()
        if self.token_expires_us - time.time_ns() // 1000 < TOKEN_REFRESH_MARGIN_US:
            async with self._lock:
                await self._login()

    async def call(self, method: str, request: Any, *, attempts: int | None = None) -> Any:
        """A unary call with the session token; fails over on UNAVAILABLE, logs in again on an expired token.

        Raises the server's refusal as a `SpartanError` (after the retries, for an outage)."""
        attempts = attempts or max(3, len(self.addresses) + 1)
        backoff = Backoff(FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS)
        for attempt in range(attempts):
            generation = self.generation
            try:
                await self._ensure_ready()
                assert self.stub is not None
                return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and attempt == 0:
                    async with self._lock:
                        await self.login()
                    continue
                if exc.code() not in RETRYABLE or attempt == attempts - 1:
                    raise from_rpc_error(exc) from exc
                await asyncio.sleep(backoff.next())
                try:
                    await self._failover(generation)
                except grpc.aio.AioRpcError:
                    continue
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        for task in self._closing:
            task.cancel()
