"""Login and per-call authentication on the gateway: the identity key pair is the login.

`GetChallenge` hands out a stateless MAC'd nonce; `Login` checks the client's
Ed25519 signature over it against the key registered for the user (registering the
presented keys on first login, first registration wins), and issues a session token
signed with the secret all gateways share. `authenticated` wraps every other handler:
it verifies the bearer token from the call metadata without any shared session store
and publishes the user in `spartan.context.current_user` for rate limiting and logs.
A nonce logs in at most once (Redis `SET NX` with the nonce's remaining lifetime).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from redis.asyncio import Redis

from spartan.config import Config
from spartan.context import current_user
from spartan.crypto.identity import fingerprint, verify_public_keys
from spartan.crypto.tokens import ChallengeIssuer, TokenIssuer, verify_login_once
from spartan.errors import PermissionDenied, Unauthenticated
from spartan.naming import BROADCAST_CHANNEL
from spartan.v1 import pb, rpc

log = logging.getLogger("spartan.gateway.auth")

F = TypeVar("F", bound=Callable[..., Any])
NONCE_PREFIX = "sp:auth:nonce:"


class Authenticator:
    def __init__(self, config: Config, secret: str, presence: rpc.PresenceStub, redis: Redis) -> None:
        self.config = config
        self.tokens = TokenIssuer(secret, config.auth.token_ttl_seconds)
        self.challenges = ChallengeIssuer(secret, config.auth.challenge_ttl_seconds)
        self.presence = presence
        self.redis = redis
        self.timeout = config.services.call_timeout_seconds

    async def challenge(self, user: str) -> pb.Challenge:
        nonce, expires_at_us = self.challenges.issue(user)
        registered = await self._registered_key(user) is not None
        return pb.Challenge(nonce=nonce, expires_at_us=expires_at_us, registered=registered)

    async def login(self, request: pb.LoginRequest) -> pb.Session:
        user = request.user
        verify_public_keys(request.keys, user=user)
        registered = await self._registered_key(user)
        await verify_login_once(self.challenges, user=user, nonce=request.nonce, signature=request.signature,
                                identity_key=request.keys.identity_key, registered_key=registered,
                                seen_nonce=self._seen_nonce)
        if registered is None:
            await self._register(request)
        token, expires_at_us = self.tokens.issue(user, request.keys.identity_key)
        log.info("login of %s with key %s", user, fingerprint(request.keys.identity_key)[:16])
        return pb.Session(token=token, expires_at_us=expires_at_us)

    def authenticate(self, context: grpc.aio.ServicerContext) -> str:
        """The user of the call's bearer token; raises Unauthenticated."""
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                token = str(value).removeprefix("Bearer ").strip()
                break
        if not token:
            raise Unauthenticated("not logged in: call GetChallenge and Login first")
        claims = self.tokens.verify(token)
        current_user.set(claims.user)
        return claims.user

    async def _registered_key(self, user: str) -> bytes | None:
        pinned = self.config.auth.pinned_keys.get(user)
        if pinned:
            return bytes.fromhex(pinned)
        try:
            keys = await self.presence.GetKeys(pb.UserRef(user=user), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return keys.identity_key

    async def _register(self, request: pb.LoginRequest) -> None:
        expected = self.config.auth.enrolment_codes.get(request.user)
        if expected is not None and not hmac.compare_digest(
                hashlib.sha256(request.enrolment_code.encode()).digest(), hashlib.sha256(expected.encode()).digest()):
            raise PermissionDenied(f"registering keys for {request.user} needs the enrolment code from the operator")
        try:
            await self.presence.PutKeys(request.keys, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                raise Unauthenticated(f"{request.user} registered other keys a moment ago") from None
            raise
        if expected is not None:
            log.info("enrolment code of %s used", request.user)
        update = pb.Message(kind=pb.KEY_UPDATE, sender=request.user, id=fingerprint(request.keys.identity_key)[:32])
        await self.redis.publish(BROADCAST_CHANNEL, update.SerializeToString())

    async def _seen_nonce(self, nonce: bytes, ttl_seconds: float) -> bool:
        key = NONCE_PREFIX + hashlib.sha256(nonce).hexdigest()
        return not await self.redis.set(key, 1, nx=True, px=max(1, int(ttl_seconds * 1000)))


def authenticated(handler: F) -> F:
    """Require a valid session token; works for unary handlers and async-generator streams."""
    if inspect.isasyncgenfunction(handler):
        @functools.wraps(handler)
        async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.auth.authenticate(context)
            async for item in handler(self, request, context):
                yield item

        return streaming  # type: ignore[return-value]

    @functools.wraps(handler)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.auth.authenticate(context)
        return await handler(self, request, context)

    return unary  # type: ignore[return-value]


__all__ = ["Authenticator", "authenticated"]
