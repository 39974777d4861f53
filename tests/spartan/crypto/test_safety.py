"""Safety numbers: identical on both sides, 12 groups of 5 digits, sensitive to every input."""
from __future__ import annotations

import re

import pytest

from spartan.crypto import safety_number
from spartan.crypto.safety import format_rows
from spartan.errors import InvalidArgument

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def test_both_sides_compute_the_same_number() -> None:
    assert safety_number("alice", KEY_A, "bob", KEY_B) == safety_number("bob", KEY_B, "alice", KEY_A)


def test_format_is_twelve_groups_of_five_digits() -> None:
    number = safety_number("alice", KEY_A, "bob", KEY_B)
    assert re.fullmatch(r"\d{5}( \d{5}){11}", number)
    assert format_rows(number) == [" ".join(number.split()[i:i + 4]) for i in (0, 4, 8)]


def test_number_is_stable_across_releases() -> None:
    """A regression vector: changing the derivation would silently break verified contacts."""
    assert safety_number("alice", KEY_A, "bob", KEY_B) == (
        "16594 26884 17676 63480 20940 06883 31285 32111 10151 01308 39510 80530")


def test_any_key_or_name_change_changes_the_number() -> None:
    base = safety_number("alice", KEY_A, "bob", KEY_B)
    other_key = bytes([KEY_B[0] ^ 1]) + KEY_B[1:]
    assert safety_number("alice", KEY_A, "bob", other_key) != base
    assert safety_number("alice", other_key, "bob", KEY_B) != base
    assert safety_number("alicf", KEY_A, "bob", KEY_B) != base


def test_malformed_key_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="32 bytes"):
        safety_number("alice", KEY_A[:31], "bob", KEY_B)
