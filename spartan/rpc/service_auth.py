"""Caller authentication between services: every internal call carries a signed service credential.

Presence and history are never exposed to clients, but "internal" is not a
credential: any process that reaches their port could reset keys, read any
conversation or write a message "from alice". So every call from a gateway or
`spartan-admin` carries `x-spartan-caller: v1.<unix ms>.<hex HMAC-SHA256>` made with
the service secret (`auth.service_secret` / `auth.service_secret_file`) over the
method, the time and the acting user (`x-spartan-user`, empty when none). Presence
and history verify it before any handler runs: a missing or wrong signature is
UNAUTHENTICATED, one further than `CALL_WINDOW_SECONDS` (10 minutes) from the
receiver's clock is too, and a signed user can only be changed by someone who holds
the secret. Health and
reflection stay open (load balancers and probes use them). Channels sign through a
client interceptor, so call sites only set `x-spartan-user`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from spartan.config import AuthConfig, Config
from spartan.token_secret import refusal

CALLER_HEADER = "x-spartan-caller"
USER_HEADER = "x-spartan-user"
VERSION = "v1"
# How far a signature's time may be from the receiver's clock: wide enough for replicas whose
# clocks drift apart by minutes (the rate limit is exact across such skew, and tested so), narrow
# enough that a copied credential expires; TLS between services keeps credentials from being copied.
CALL_WINDOW_SECONDS = 600.0
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
HOW_TO = "set it to the output of: spartan-admin gen-secret (the same value for every service)"


class ServiceSecretError(ValueError):
    """The service secret is missing, unreadable or known to the public; the message says what to do."""


def resolve(auth: AuthConfig) -> str:
    """The service secret this process signs or verifies with; raises ServiceSecretError with one line."""
    if auth.service_secret and auth.service_secret_file:
        raise ServiceSecretError("auth.service_secret and auth.service_secret_file are both set; keep one")
    if auth.service_secret_file:
        where = f"auth.service_secret_file {auth.service_secret_file}"
        try:
            secret = Path(auth.service_secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServiceSecretError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    elif auth.service_secret:
        secret, where = auth.service_secret, "auth.service_secret"
    else:
        raise ServiceSecretError(
            "auth.service_secret is not set; gateways, presence and history must share one "
            f"(SPARTAN_AUTH__SERVICE_SECRET or SPARTAN_AUTH__SERVICE_SECRET_FILE; {HOW_TO})"
        )
    reason = refusal(secret) if secret else f"is empty; {HOW_TO}"
    if reason:
        raise ServiceSecretError(f"{where} {reason}")
    return secret


def _mac(secret: bytes, method: str, millis: int, user: str) -> str:
    message = f"{VERSION}\n{method}\n{millis}\n{user}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, user: str = "", now: float | None = None) -> str:
    """The `x-spartan-caller` value for a call of `method` on behalf of `user`."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{VERSION}.{millis}.{_mac(secret.encode(), method, millis, user)}"


def check(secret: str, method: str, credential: str, user: str, now: float | None = None) -> str | None:
    """Why the credential does not authorize this call, or None when it does."""
    if not credential:
        return "internal services accept only calls signed with the service secret (auth.service_secret)"
    parts = credential.split(".")
    if len(parts) != 3 or parts[0] != VERSION or not parts[1].isdigit():
        return "malformed service credential"
    millis = int(parts[1])
    if not hmac.compare_digest(parts[2], _mac(secret.encode(), method, millis, user)):
        return "the service credential does not match (a different auth.service_secret, or a forged call)"
    skew = abs((time.time() if now is None else now) - millis / 1000)
    if skew > CALL_WINDOW_SECONDS:
        return (
            f"the service credential is {skew:.0f} s away from this server's clock "
            f"(more than {CALL_WINDOW_SECONDS:.0f} s); check the clocks"
        )
    return None


def _metadata_value(metadata: Sequence[tuple[str, Any]] | None, key: str) -> str:
    for name, value in metadata or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


class CallerCheck(grpc.aio.ServerInterceptor):
    """Refuses every call that does not carry a valid service credential (health and reflection excepted)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        metadata = details.invocation_metadata
        reason = check(
            self.secret, method, _metadata_value(metadata, CALLER_HEADER), _metadata_value(metadata, USER_HEADER)
        )
        return handler if reason is None else _refusal(handler, reason)


def _refusal(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED with `reason`."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        yield  # pragma: no cover - makes this an async generator

    shapes = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    streaming = handler.response_streaming
    make = shapes[(handler.request_streaming, streaming)]
    return make(
        refuse_stream if streaming else refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _signed(secret: str, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    metadata = [(k, v) for k, v in (details.metadata or ()) if k != CALLER_HEADER]
    metadata.append((CALLER_HEADER, sign(secret, method, _metadata_value(metadata, USER_HEADER))))
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=grpc.aio.Metadata(*metadata),
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class _SignUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, secret: str) -> None:
        self.secret = secret

    async def intercept_unary_unary(self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(_signed(self.secret, details), request)


class _SignUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, secret: str) -> None:
        self.secret = secret

    async def intercept_unary_stream(self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(_signed(self.secret, details), request)


def signing_interceptors(secret: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that sign every call on a channel to presence or history."""
    return [_SignUnary(secret), _SignUnaryStream(secret)]


def service_secret_or_exit(service: str, config: Config) -> str:
    """The secret, or exit at start with one line naming the setting (before waiting for Redis or peers)."""
    try:
        return resolve(config.auth)
    except ServiceSecretError as exc:
        raise SystemExit(f"spartan-{service}: {exc}") from None
