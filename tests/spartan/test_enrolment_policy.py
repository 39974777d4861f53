"""When first key registration needs an enrolment code, and what a code looks like."""
from __future__ import annotations

import pytest

from spartan.enrolment import ALPHABET, digest, new_code, required


@pytest.mark.parametrize(("mode", "host", "needed"), [
    ("auto", "127.0.0.1", False), ("auto", "::1", False), ("auto", "[::1]", False), ("auto", "localhost", False),
    ("auto", "0.0.0.0", True), ("auto", "[::]", True), ("auto", "10.0.0.5", True), ("auto", "chat.example.org", True),
    ("required", "127.0.0.1", True), ("open", "0.0.0.0", False),
])
def test_codes_are_required_wherever_strangers_can_reach_a_gateway(mode: str, host: str, needed: bool) -> None:
    assert required(mode, host) is needed


def test_codes_are_random_readable_and_compared_as_typed() -> None:
    codes = {new_code() for _ in range(1000)}
    assert len(codes) == 1000
    for code in codes:
        groups = code.split("-")
        assert [len(g) for g in groups] == [4, 4, 4, 4] and set("".join(groups)) <= set(ALPHABET)
    code = next(iter(codes))
    assert digest(f"  {code.upper()} ") == digest(code) != digest(code[:-1])
