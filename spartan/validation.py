"""Input checks shared by the services, each failing with a precise, actionable error."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection

from spartan.config import NAME_PATTERN
from spartan.errors import InvalidArgument, NotFound

MESSAGE_ID_MAX = 64


def check_name(value: str, what: str = "user name", *, field: str = "") -> str:
    """A user or group name: lower-case, printable, short. `field`: the request field it came from."""
    if not value:
        raise InvalidArgument(f"{what} is empty", field=field)
    if not NAME_PATTERN.match(value):
        shown = value if value.isprintable() and len(value) <= 40 else repr(value[:40])
        raise InvalidArgument(
            f"{what} {shown!s} is not valid: use lower-case letters, digits, '_', '.', '-' (up to 32)", field=field
        )
    return value


def check_user(value: str, users: Collection[str], what: str = "user", *, field: str = "") -> str:
    check_name(value, f"{what} name", field=field)
    if value not in users:
        raise NotFound(f"unknown user '{value}'")
    return value


def check_message_id(value: str, *, field: str = "id") -> str:
    if not value:
        raise InvalidArgument("message id is empty: every message needs a unique id", field=field)
    if len(value) > MESSAGE_ID_MAX or not value.isascii() or not value.isprintable():
        raise InvalidArgument(f"message id must be up to {MESSAGE_ID_MAX} printable ASCII characters", field=field)
    return value


def check_body(body: bytes, max_bytes: int, *, field: str = "body") -> bytes:
    if not body:
        raise InvalidArgument("message is empty", field=field)
    if len(body) > max_bytes:
        raise InvalidArgument(f"message is {len(body)} bytes; the maximum is {max_bytes} bytes", field=field)
    return body


def check_text(text: str, max_bytes: int) -> str:
    """Plain text typed by a person: no control characters except tab."""
    if not text.strip():
        raise InvalidArgument("message is empty")
    if len(text.encode()) > max_bytes:
        raise InvalidArgument(f"message is larger than the maximum of {max_bytes} bytes")
    for char in text:
        if char != "\t" and unicodedata.category(char) in ("Cc", "Cs"):
            raise InvalidArgument("message contains control characters")
    return text
