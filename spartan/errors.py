"""One error hierarchy for the whole project, each class mapped to a gRPC status code.

Handlers raise these; the handler wrappers (`spartan.rpc.handlers`) turn them into
`context.abort(code, message, trailers)` so clients get a precise status and a message
a person can act on, and never a traceback. Anything else that escapes a handler
is logged and answered as INTERNAL with a generic message.

Next to the plain trailers (`retry-after`, ...), an error may carry the standard rich
details that gRPC clients in any language read (`google.rpc.Status` in the
`grpc-status-details-bin` trailer, via grpcio-status): a rate limit carries
`google.rpc.RetryInfo`, an invalid request whose field is known carries a
`google.rpc.BadRequest` naming it.

The client side maps a received `grpc.aio.AioRpcError` back with `from_rpc_error`
(the retry delay from RetryInfo first, else from the trailer) in one place, its
connection, so everything above it handles these classes and prints one plain line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

Trailer = tuple[str, str | bytes]


class SpartanError(Exception):
    """Base class: `code` is the gRPC status the client receives, `str(self)` the message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self, message: str, *, trailers: tuple[tuple[str, str], ...] = (), details: Sequence[ProtoMessage] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.trailers = trailers
        self.details = tuple(details)  # google.rpc detail messages (RetryInfo, BadRequest, ...)

    def trailing_metadata(self) -> tuple[Trailer, ...]:
        """What the server sends after the status: the plain trailers, then the rich details if any."""
        if not self.details:
            return self.trailers
        return (*self.trailers, *rich_status_trailers(self.code, self.message, self.details))


class InvalidArgument(SpartanError):
    """Malformed input: empty message, bad name, oversized body, bad offsets.

    `field` names the request field at fault (e.g. "recipient"), when one is: it is sent
    as a `google.rpc.BadRequest` field violation.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, *, field: str = "", details: Sequence[ProtoMessage] = ()) -> None:
        if field and not details:
            violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
            details = (error_details_pb2.BadRequest(field_violations=[violation]),)
        super().__init__(message, details=details)
        self.field = field


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
        retry_after = round(retry_after, 3)  # the trailer and RetryInfo state the very same delay (ms)
        super().__init__(
            message,
            trailers=(
                ("retry-after", f"{retry_after:.3f}"),
                ("ratelimit-limit", f"{limit:g}"),
                ("ratelimit-remaining", f"{max(remaining, 0):.0f}"),
            ),
            details=(error_details_pb2.RetryInfo(retry_delay=_duration(retry_after)),) if retry_after >= 0 else (),
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


def rich_status_trailers(code: grpc.StatusCode, message: str, details: Sequence[ProtoMessage]) -> tuple[Trailer, ...]:
    """The `grpc-status-details-bin` trailer: a `google.rpc.Status` holding `details`."""
    packed = []
    for detail in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(detail)
        packed.append(wrapped)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    return tuple(rpc_status.to_status(status).trailing_metadata)


def rich_details(error: grpc.aio.AioRpcError) -> list[ProtoMessage]:
    """The `google.rpc` detail messages an error carries (RetryInfo, BadRequest); [] when none
    or when the trailer does not parse or contradicts the status (never raises)."""
    try:
        status = rpc_status.from_call(error)
    except (ValueError, DecodeError):
        return []
    if status is None:
        return []
    found: list[ProtoMessage] = []
    for wrapped in status.details:
        for kind in (error_details_pb2.RetryInfo, error_details_pb2.BadRequest):
            if wrapped.Is(kind.DESCRIPTOR):
                detail = kind()
                wrapped.Unpack(detail)
                found.append(detail)
    return found


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """Seconds to wait before retrying: `google.rpc.RetryInfo` first, else the `retry-after` trailer."""
    for detail in rich_details(error):
        if isinstance(detail, error_details_pb2.RetryInfo) and detail.HasField("retry_delay"):
            delay = detail.retry_delay.seconds + detail.retry_delay.nanos / 1e9
            if math.isfinite(delay) and delay >= 0:
                return delay
    value = trailers_of(error).get("retry-after")
    try:
        delay = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return max(0.0, delay) if math.isfinite(delay) else None


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) pairs of the error's `google.rpc.BadRequest`, if it has one."""
    return [
        (violation.field, violation.description)
        for detail in rich_details(error)
        if isinstance(detail, error_details_pb2.BadRequest)
        for violation in detail.field_violations
    ]


def from_rpc_error(error: grpc.aio.AioRpcError) -> SpartanError:
    """Rebuild the project error a server sent, keeping code, message, retry delay and field.

    The one place an `AioRpcError` is read: the client's connection raises what this returns,
    so nothing above it parses statuses or trailers. A code without a class of its own
    (DEADLINE_EXCEEDED, CANCELLED, INTERNAL, ...) is kept on a plain `SpartanError`."""
    message = error.details() or error.code().name
    rebuilt = _rebuild(error, message)
    rebuilt.code = error.code()
    return rebuilt


def _rebuild(error: grpc.aio.AioRpcError, message: str) -> SpartanError:
    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        delay = retry_delay(error)
        if delay is not None:
            return RateLimited(message, retry_after=delay)
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        bad = [detail for detail in rich_details(error) if isinstance(detail, error_details_pb2.BadRequest)]
        return InvalidArgument(message, details=bad)
    for cls in (
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


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int(round((seconds - whole) * 1e9)))
