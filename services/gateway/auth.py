"""Login and per-call authentication on the gateway: the identity key pair is the login.

`GetChallenge` hands out a stateless MAC'd nonce (the same answer whether or not the
user has registered keys); `Login` checks the client's Ed25519 signature over it
against the key registered for the user (registering the presented keys on first
login, when the operator allows it: `spartan.enrolment`), and issues a session token
signed with the secret all gateways share. Both are rate limited per peer address and
per claimed user (`login_limits`), and a login runs its cheap checks (limits, the
nonce's MAC, the replay guard) before the key directory and any signature check.
`authenticated` wraps every other handler: it verifies the bearer token from the call
metadata without any shared session store and publishes the user in
`spartan.context.current_user` for rate limiting and logs.
Challenges name the deployment (`spartan.deployment`), logins sign it and tokens carry
it, so a login or token from another deployment is UNAUTHENTICATED here.
A nonce logs in at most once (`spartan.crypto.tokens.redis_seen_nonce`: Redis `SET NX`
with the nonce's remaining lifetime).

Key resets end sessions: every authenticated call also checks that the token's key
fingerprint is still the directory's key for the user (`SessionClaims.matches_key`).
The directory answer is cached in-process for `KEY_CHECK_TTL_SECONDS`, so the hot path
stays a dictionary lookup and a reset takes effect on every replica within that bound
(open streams are re-checked before each delivery once the bound has passed). While
presence is unreachable the last key seen for the user is used; a user never seen
gets UNAVAILABLE rather than an unchecked session.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from redis.asyncio import Redis

from services.gateway.login_limits import LoginLimits
from spartan.cache import lru_cache
from spartan.config import Config
from spartan.context import current_user
from spartan.crypto.identity import fingerprint, verify_public_keys
from spartan.crypto.tokens import ChallengeIssuer, SessionClaims, TokenIssuer, redis_seen_nonce, verify_login_once
from spartan.enrolment import EnrolmentCodes, Outcome
from spartan.enrolment import required as enrolment_required
from spartan.errors import PermissionDenied, Unauthenticated, Unavailable
from spartan.naming import BROADCAST_CHANNEL
from spartan.v1 import pb, rpc

log = logging.getLogger("spartan.gateway.auth")

F = TypeVar("F", bound=Callable[..., Any])
KEY_CHECK_TTL_SECONDS = 5.0  # a key reset ends sessions on every replica within this bound
KEY_CHECK_CACHE_SIZE = 4096
CLOCK_SKEW_SECONDS = 30.0  # replicas' clocks may differ this much when judging a token's age
NO_KEY = ""  # cached fingerprint of a user without registered keys
UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Authenticator:
    def __init__(
        self, config: Config, secret: str, presence: rpc.PresenceStub, redis: Redis, *, deployment_id: str
    ) -> None:
        self.config = config
        self.deployment_id = deployment_id  # `spartan.deployment.resolve`: what logins sign and tokens carry
        self.tokens = TokenIssuer(secret, config.auth.token_ttl_seconds, deployment_id=deployment_id)
        self.challenges = ChallengeIssuer(secret, config.auth.challenge_ttl_seconds, deployment_id=deployment_id)
        self.presence = presence
        self.redis = redis
        self.seen_nonce = redis_seen_nonce(redis)
        self.timeout = config.services.call_timeout_seconds
        self.directory_fingerprint = lru_cache(
            maxsize=KEY_CHECK_CACHE_SIZE, ttl=KEY_CHECK_TTL_SECONDS, name="gateway_session_keys"
        )(self._fetch_fingerprint)
        self._last_known: dict[str, str] = {}  # user -> fingerprint, used while presence is unreachable
        self.limits = LoginLimits(redis, config.auth)
        self.enrolment = EnrolmentCodes(redis)
        self.enrolment_required = enrolment_required(config.auth.enrolment, config.gateway.host)
        log.info(
            "first key registration %s (auth.enrolment=%s, gateway.host=%s)",
            "needs an enrolment code" if self.enrolment_required else "is open to the first login",
            config.auth.enrolment,
            config.gateway.host,
        )

    async def challenge(self, user: str, peer: str) -> pb.Challenge:
        """A fresh nonce; says nothing about the user's keys (that would show which accounts are unclaimed)."""
        await self.limits.take(peer, user)
        nonce, expires_at_us = self.challenges.issue(user)
        return pb.Challenge(nonce=nonce, expires_at_us=expires_at_us, deployment_id=self.deployment_id)

    async def login(self, request: pb.LoginRequest, peer: str) -> pb.Session:
        user = request.user
        await self.limits.take(peer, user)
        self.challenges.check(user, request.nonce)  # an HMAC: refuses made-up nonces before any lookup
        in_directory = await self._directory_key(user)
        pinned = self.config.auth.pinned_keys.get(user)
        registered = bytes.fromhex(pinned) if pinned else in_directory
        await verify_login_once(
            self.challenges,
            user=user,
            nonce=request.nonce,
            signature=request.signature,
            identity_key=request.keys.identity_key,
            registered_key=registered,
            seen_nonce=self.seen_nonce,
        )
        verify_public_keys(request.keys, user=user)  # the prekey too, if there is one
        registered_now = in_directory is None
        if registered_now:
            await self._register(request, pinned=bool(pinned))  # first login (a pinned key is registered too)
        first_prekey = request.keys.HasField("prekey") and await self._publish_prekey(request)
        if registered_now or first_prekey:  # peers waiting to write to this user may now
            update = pb.Message(kind=pb.KEY_UPDATE, sender=user, id=fingerprint(request.keys.identity_key)[:32])
            await self.redis.spublish(BROADCAST_CHANNEL, update.SerializeToString())
        await self.directory_fingerprint.invalidate(user)
        token, expires_at_us = self.tokens.issue(user, request.keys.identity_key)
        log.info("login of %s with key %s", user, fingerprint(request.keys.identity_key)[:16])
        return pb.Session(token=token, expires_at_us=expires_at_us)

    async def authenticate(self, context: grpc.aio.ServicerContext) -> SessionClaims:
        """The claims of the call's bearer token; raises Unauthenticated (or Unavailable)."""
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                token = str(value).removeprefix("Bearer ").strip()
                break
        if not token:
            raise Unauthenticated("not logged in: call GetChallenge and Login first")
        claims = self.tokens.verify(token)
        await self.check_key(claims)
        current_user.set(claims.user)
        return claims

    async def check_key(self, claims: SessionClaims) -> None:
        """Refuse a session whose key is no longer the user's registered key (reset by an operator)."""
        current = await self._current_fingerprint(claims.user)
        if current == claims.identity_key_fingerprint:
            return
        if self._issued_recently(claims):  # the cached answer may predate this session's login
            await self.directory_fingerprint.invalidate(claims.user)
            current = await self._current_fingerprint(claims.user)
            if current == claims.identity_key_fingerprint:
                return
        raise Unauthenticated(
            f"the keys of {claims.user} were reset since this session began; log in again with the current key"
        )

    def _issued_recently(self, claims: SessionClaims) -> bool:
        issued_at = claims.expires_at_us / 1e6 - self.tokens.ttl_seconds
        return issued_at > time.time() - KEY_CHECK_TTL_SECONDS - CLOCK_SKEW_SECONDS

    async def _current_fingerprint(self, user: str) -> str:
        try:
            current: str = await self.directory_fingerprint(user)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in UNREACHABLE:
                raise
            known = self._last_known.get(user)
            if known is None:
                raise Unavailable(
                    "cannot check your session right now (key directory unreachable); try again shortly"
                ) from None
            return known
        self._last_known[user] = current
        return current

    async def _fetch_fingerprint(self, user: str) -> str:
        key = await self._registered_key(user)
        return fingerprint(key) if key is not None else NO_KEY

    async def _registered_key(self, user: str) -> bytes | None:
        """The key that may log in as `user`: pinned in config, else the directory's."""
        pinned = self.config.auth.pinned_keys.get(user)
        return bytes.fromhex(pinned) if pinned else await self._directory_key(user)

    async def _directory_key(self, user: str) -> bytes | None:
        try:
            keys = await self.presence.GetKeys(pb.UserRef(user=user), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return keys.identity_key

    async def _register(self, request: pb.LoginRequest, *, pinned: bool) -> None:
        user = request.user
        outcome = Outcome.NOT_NEEDED
        if not pinned:  # a key pinned in config is the operator's choice already
            outcome = await self.enrolment.redeem(
                user,
                request.enrolment_code,
                required=self.enrolment_required,
                fixed=self.config.auth.enrolment_codes.get(user),
            )
        if outcome is Outcome.REFUSED:
            raise PermissionDenied(
                f"registering keys for {user} needs a valid enrolment code from the operator "
                f"(spartan-admin enrol {user}); start the client with --enrolment-code CODE"
            )
        try:
            await self.presence.PutKeys(request.keys, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                raise Unauthenticated(f"{request.user} registered other keys a moment ago") from None
            raise
        if outcome is Outcome.ACCEPTED:
            log.info("enrolment code of %s used", user)

    async def _publish_prekey(self, request: pb.LoginRequest) -> bool:
        """Every login carries the client's current prekey: store it (True if the user had none)."""
        ack = await self.presence.PutPrekey(
            pb.PublicKeys(user=request.user, prekey=request.keys.prekey), timeout=self.timeout
        )
        return bool(ack.first)


ACCESS = "__spartan_access__"  # "public" or "authenticated": set by the decorators below


def public(handler: F) -> F:
    """Mark an RPC as callable without a session (only the login handshake is)."""
    setattr(handler, ACCESS, "public")
    return handler


def require_declared_access(servicer: type, service: ServiceDescriptor) -> None:
    """Refuse a servicer with an RPC marked neither `@public` nor `@authenticated`.

    Authentication is deny-by-default: a new RPC that nobody decided about stops the
    gateway at start instead of silently serving everyone.
    """
    undecided = [
        name
        for name in service.methods_by_name
        if getattr(getattr(servicer, name, None), ACCESS, None) not in ("public", "authenticated")
    ]
    if undecided:
        raise TypeError(
            f"{servicer.__name__}: mark {', '.join(sorted(undecided))} "
            "@public or @authenticated (services/gateway/auth.py)"
        )


def authenticated(handler: F) -> F:
    """Require a valid session token; works for unary handlers and async-generator streams.

    A stream is re-checked before a delivery once `KEY_CHECK_TTL_SECONDS` have passed
    since its last check, so a key reset also ends streams that were already open.
    """
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            claims = await self.auth.authenticate(context)
            checked_at = time.monotonic()
            async with aclosing(handler(self, request, context)) as items:
                async for item in items:
                    if time.monotonic() - checked_at >= KEY_CHECK_TTL_SECONDS:
                        await self.auth.check_key(claims)
                        checked_at = time.monotonic()
                    yield item

        setattr(streaming, ACCESS, "authenticated")
        return streaming  # type: ignore[return-value]

    @functools.wraps(handler)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.auth.authenticate(context)
        return await handler(self, request, context)

    setattr(unary, ACCESS, "authenticated")
    return unary  # type: ignore[return-value]


__all__ = ["Authenticator", "authenticated", "public", "require_declared_access"]
