"""Safety numbers: a 60-digit code two users compare out of band to rule out a key swap.

Built like Signal's numeric fingerprints: for each user, SHA-512 is iterated
over (version, identity key, user name) and then the key again 5200 times; the
first 30 bytes give 30 digits (six 5-byte chunks, each mod 100000). The two
halves are ordered by value, so both users see the same 12 groups of 5 digits,
and any change of either identity key (or name) changes the number.
The 10,400 SHA-512 rounds use the standard library's hashlib (same function,
about ten times faster per call than pycryptodome's object API here).
"""

from __future__ import annotations

import hashlib

from spartan.errors import InvalidArgument

VERSION = b"\x00\x00"
ITERATIONS = 5200
GROUPS = 12


def _half(user: str, identity_key: bytes) -> str:
    if len(identity_key) != 32:
        raise InvalidArgument(f"identity key of {user} must be 32 bytes, got {len(identity_key)}")
    digest = hashlib.sha512(VERSION + identity_key + user.encode("utf-8")).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + identity_key).digest()
    return "".join(f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))


def safety_number(user_a: str, key_a: bytes, user_b: str, key_b: bytes) -> str:
    """ "12345 67890 …" (12 groups of 5 digits), the same whichever side computes it."""
    digits = "".join(sorted((_half(user_a, key_a), _half(user_b, key_b))))
    return " ".join(digits[i : i + 5] for i in range(0, len(digits), 5))


def format_rows(number: str, per_row: int = 4) -> list[str]:
    """Split a safety number into rows for display (3 rows of 4 groups by default)."""
    groups = number.split()
    return [" ".join(groups[i : i + per_row]) for i in range(0, len(groups), per_row)]
