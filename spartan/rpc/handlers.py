"""Decorators that turn handler outcomes into precise gRPC statuses and metrics.

Every servicer method is wrapped by `unary` or `stream`. A `SpartanError` becomes
`context.abort(code, message, trailers)`, its rich details (RetryInfo, BadRequest) in the
standard `grpc-status-details-bin` trailer; a Redis connection failure or an
unreachable internal service becomes UNAVAILABLE; an error status from an internal
service is passed on unchanged (its message is already meant for people); anything
else is logged with its traceback and answered as INTERNAL with a generic message,
so no traceback ever reaches a client and no handler crashes the server. A request
that did not parse (`spartan.rpc.malformed.Malformed`) is refused with
INVALID_ARGUMENT before the handler runs, and logged at most once a second per caller.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import redis.exceptions

from spartan import errors
from spartan.context import current_rpc
from spartan.metrics import RPC_SECONDS, RPCS
from spartan.ratelimit.decorator import peer_host
from spartan.rpc import malformed

log = logging.getLogger("spartan.rpc")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
UnaryHandler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]
StreamHandler = Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]

_PASSED_ON = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}


def translate(exc: BaseException) -> errors.SpartanError | None:
    """The project error an exception stands for, or None if it is a bug."""
    if isinstance(exc, errors.SpartanError):
        return exc
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return errors.Unavailable("storage is unavailable right now, try again shortly")
    if isinstance(exc, redis.exceptions.NoScriptError):
        return errors.Unavailable("storage was restarted, try again")
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        if code in _PASSED_ON:
            return errors.from_rpc_error(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            return errors.Unavailable("an internal service is unavailable right now, try again shortly")
    return None


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, service: str, method: str) -> grpc.StatusCode:
    error = translate(exc)
    if error is None:
        log.error("unhandled error in %s/%s", service, method, exc_info=exc)
        error = errors.SpartanError("internal error; the server logged the details")
    elif error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
        log.warning("%s/%s: %s (%s)", service, method, error.message, type(exc).__name__)
    await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())
    return error.code  # not reached: abort raises


def unary(service: str) -> Callable[[UnaryHandler[Req, Resp]], UnaryHandler[Req, Resp]]:
    def decorate(fn: UnaryHandler[Req, Resp]) -> UnaryHandler[Req, Resp]:
        method = fn.__name__

        @functools.wraps(fn)
        async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            current_rpc.set(method)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                _refuse_malformed(request, context, method)
                return await fn(self, request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001 - every failure gets a status
                code = _status_of(exc, context)
                if not _is_abort(exc):
                    await _abort(context, exc, service, method)
                raise
            finally:
                RPCS.labels(service, method, _code_name(code)).inc()
                RPC_SECONDS.labels(service, method).observe(time.perf_counter() - started)

        return wrapper

    return decorate


def stream(service: str) -> Callable[[StreamHandler[Req, Resp]], StreamHandler[Req, Resp]]:
    def decorate(fn: StreamHandler[Req, Resp]) -> StreamHandler[Req, Resp]:
        method = fn.__name__

        @functools.wraps(fn)
        async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
            current_rpc.set(method)
            code = grpc.StatusCode.OK
            try:
                _refuse_malformed(request, context, method)
                async for item in fn(self, request, context):
                    yield item
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001 - every failure gets a status
                code = _status_of(exc, context)
                if not _is_abort(exc):
                    await _abort(context, exc, service, method)
                raise
            finally:
                RPCS.labels(service, method, _code_name(code)).inc()

        return wrapper

    return decorate


def _refuse_malformed(request: object, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(request, malformed.Malformed):
        malformed.report(peer_host(context.peer() or "unknown"), method, request.reason)
        raise errors.InvalidArgument(request.reason)


def _status_of(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status a call that raised `exc` ends with (counted in the metrics)."""
    if _is_abort(exc):
        return context.code() or grpc.StatusCode.UNKNOWN
    translated = translate(exc)
    return translated.code if translated else grpc.StatusCode.INTERNAL


def _is_abort(exc: BaseException) -> bool:
    """context.abort() raises AbortError; it must travel up untouched."""
    return isinstance(exc, (grpc.aio.AbortError, grpc.aio.UsageError))


def _code_name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)
