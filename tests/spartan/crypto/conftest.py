"""Fixtures of the 1:1 encryption tests: alice's and bob's ciphers, each with prekeys in memory."""
from __future__ import annotations

import pytest

from spartan.crypto import PairwiseCipher
from tests.spartan.crypto.helpers import (
    ALICE,
    ALICE_KEYS,
    ALICE_PREKEYS,
    BOB,
    BOB_KEYS,
    BOB_PREKEYS,
)


@pytest.fixture(scope="module")
def alice_to_bob() -> PairwiseCipher:
    return PairwiseCipher(ALICE, "bob", BOB_KEYS, ALICE_PREKEYS)


@pytest.fixture(scope="module")
def bob_from_alice() -> PairwiseCipher:
    return PairwiseCipher(BOB, "alice", ALICE_KEYS, BOB_PREKEYS)
