"""One error hierarchy for the whole project, each class mapped to a gRPC status code.

Handlers raise these; the handler wrappers (`spartan.rpc.handlers`) turn them into
`context.abort(code, message)` so clients get a precise status and a message a
person can act on, and never a traceback. Anything else that escapes a handler
is logged and answered as INTERNAL with a generic message.

The client side maps a received `grpc.aio.AioRpcError` back with `from_rpc_error`
so the CLI can print one plain line.
"""

from __future__ import annotations

import grpc


class SpartanError(Exception):
    """Base class: `code` is the gRPC status the client receives, `str(self)` the message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.trailers = trailers


class InvalidArgument(SpartanError):
    """Malformed input: empty message, bad name, oversized body, bad offsets."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SpartanError):
    """Unknown user, group or conversation."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SpartanError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(SpartanError):
    """Authenticated, but not allowed: not a member, not part of the conversation."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(SpartanError):
    """Missing, expired or forged credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(SpartanError):
    """The request is valid but the state does not allow it (e.g. peer has no keys yet)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class RateLimited(SpartanError):
    """Too many calls; `retry_after` seconds until the next one is accepted."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after: float, limit: float = 0, remaining: float = 0) -> None:
        super().__init__(
            message,
            trailers=(
                ("retry-after", f"{retry_after:.3f}"),
                ("ratelimit-limit", f"{limit:g}"),
                ("ratelimit-remaining", f"{max(remaining, 0):.0f}"),
            ),
        )
        self.retry_after = retry_after


class Overloaded(SpartanError):
    """The server sheds load (too many streams, client too slow to keep up)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SpartanError):
    """A dependency (Redis, presence, history) is down, or the server is draining."""

    code = grpc.StatusCode.UNAVAILABLE


def trailers_of(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The error's trailing metadata as a dict.

    `dict(metadata)` raises KeyError on grpcio older than 1.80 (its Metadata
    iterates as pairs but indexes by key), so the pairs are read one by one.
    """
    return {
        key: value if isinstance(value, str) else value.decode("latin-1")
        for key, value in error.trailing_metadata() or ()
    }


def from_rpc_error(error: grpc.aio.AioRpcError) -> SpartanError:
    """Rebuild the project error a server sent, keeping code, message and retry delay."""
    message = error.details() or error.code().name
    trailers = trailers_of(error)
    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry-after" in trailers:
        return RateLimited(message, retry_after=float(trailers["retry-after"]))
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        FailedPrecondition,
        Overloaded,
        Unavailable,
    ):
        if cls.code == error.code():
            return cls(message)
    return SpartanError(message)
