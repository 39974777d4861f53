"""Requests that cannot be served as sent: bytes that do not parse, or strings longer than a field allows.

grpc's own handling of a request that fails to deserialize logs a full traceback per
call and answers UNKNOWN, so anyone (no login needed) can write megabytes of log per
second. Instead the services parse requests with `parse_request`, which never raises:
a bad request becomes a `Malformed` value that the handler decorators answer with
INVALID_ARGUMENT and one sentence, and `report` logs one line per second at most per
caller address and method (plus a global ceiling), counting what it left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message

log = logging.getLogger("spartan.rpc.malformed")

LOG_INTERVAL_SECONDS = 1.0  # one line per caller address and method per interval
MAX_LINES_PER_INTERVAL = 10  # and at most this many lines per interval in all
MAX_TRACKED = 10_000  # caller/method pairs remembered; beyond it the oldest are forgotten


@dataclass(frozen=True)
class Malformed:
    """Stands in for a request that could not be accepted as the handler's message type."""

    type_name: str
    reason: str  # one sentence for the caller


def parse_request(request_type: type[Message], max_string_chars: int | None) -> Callable[[bytes], Any]:
    """A request deserializer that returns `Malformed` instead of raising."""
    name = request_type.DESCRIPTOR.full_name

    def parse(raw: bytes) -> Any:
        try:
            request = request_type.FromString(raw)
        except (DecodeError, ValueError, RuntimeError):
            return Malformed(name, f"the request is not a valid {name} message")
        if max_string_chars is not None and len(raw) > max_string_chars:
            too_long = _long_string(request, max_string_chars)
            if too_long:
                return Malformed(name, f"{too_long} is longer than {max_string_chars} characters")
        return request

    return parse


def _long_string(message: Message, limit: int, prefix: str = "") -> str:
    """The path of the first string field (at any depth) longer than `limit`, or ''."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        items = value if _repeated(field) else (value,)
        if field.type == field.TYPE_STRING:
            if any(len(item) > limit for item in items):
                return path
        elif field.type == field.TYPE_MESSAGE:
            for item in items:
                found = _long_string(item, limit, f"{path}.")
                if found:
                    return found
    return ""


def _repeated(field: Any) -> bool:
    """`is_repeated` (protobuf 5.29+) or the older `label`."""
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


class _Reporter:
    """One log line per (caller address, method) per interval, with the count of the ones left out."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # -> (logged at, suppressed since)
        self._window_start = 0.0
        self._lines_in_window = 0
        self._dropped_globally = 0

    def report(self, peer: str, method: str, reason: str) -> None:
        now = time.monotonic()
        key = (peer, method)
        logged_at, suppressed = self._last.get(key, (-LOG_INTERVAL_SECONDS, 0))
        if now - logged_at < LOG_INTERVAL_SECONDS:
            self._last[key] = (logged_at, suppressed + 1)
            return
        if now - self._window_start >= LOG_INTERVAL_SECONDS:
            self._window_start, self._lines_in_window = now, 0
        if self._lines_in_window >= MAX_LINES_PER_INTERVAL:
            self._dropped_globally += 1
            self._last[key] = (logged_at, suppressed + 1)
            return
        self._lines_in_window += 1
        if len(self._last) >= MAX_TRACKED:
            self._forget_old(now)
        self._last[key] = (now, 0)
        more = f" ({suppressed} more from this caller since the last line)" if suppressed else ""
        dropped, self._dropped_globally = self._dropped_globally, 0
        others = f" ({dropped} more from other callers not logged)" if dropped else ""
        log.warning("malformed request to %s from %s: %s%s%s", method, peer, reason, more, others)

    def _forget_old(self, now: float) -> None:
        for key, (logged_at, _) in list(self._last.items()):
            if now - logged_at >= LOG_INTERVAL_SECONDS:
                del self._last[key]
        while len(self._last) >= MAX_TRACKED:
            del self._last[next(iter(self._last))]


report = _Reporter().report
