"""The names every crypto module shares: the one decryption error and the transcript encoding.

A module of its own so the submodules import it without importing their package
(whose `__init__` re-exports them): imports in `spartan.crypto` go one way.
"""

from __future__ import annotations

import struct

from spartan.errors import InvalidArgument


class DecryptError(InvalidArgument):
    """An envelope could not be opened: tampered, truncated, wrong key, wrong routing or version.

    One class on purpose: callers show one plain warning and must not learn (or
    leak) which check failed.
    """


def encode_fields(*fields: bytes | str | int) -> bytes:
    """Length-prefixed concatenation, so no two different field lists encode the same.

    Strings are UTF-8, ints are unsigned 64-bit big-endian; every field gets a
    4-byte length prefix. Used for associated data and signed transcripts.
    """
    out = bytearray()
    for field in fields:
        if isinstance(field, str):
            raw = field.encode("utf-8")
        elif isinstance(field, int):
            raw = struct.pack(">Q", field)
        else:
            raw = bytes(field)
        out += struct.pack(">I", len(raw))
        out += raw
    return bytes(out)
