"""Pinned peer keys: trust on first use; a CHANGED key is pinned only when the user accepts it; verified
marks belong to exactly the key the user compared and are reset by an accepted change."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from spartan.crypto import Identity, KeyStoreError, PinConflict, PinResult, PinStore
from spartan.errors import FailedPrecondition

KEY_1 = Identity.generate("bob").identity_key
KEY_2 = Identity.generate("bob").identity_key
AGREE_1 = Identity.generate("bob").agreement_key
AGREE_2 = Identity.generate("bob").agreement_key


def test_new_same_changed(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path)
    assert pins.check("bob", KEY_1) is PinResult.NEW
    assert pins.check("bob", KEY_1) is PinResult.NEW  # check alone changes nothing
    assert pins.pin("bob", KEY_1) is PinResult.NEW
    assert pins.check("bob", KEY_1) is PinResult.SAME
    assert pins.check("bob", KEY_2) is PinResult.CHANGED
    assert pins.pinned_key("bob") == KEY_1
    assert pins.pin("bob", KEY_2) is PinResult.CHANGED  # reported, not pinned: that is the user's decision
    assert pins.pinned_key("bob") == KEY_1
    assert PinStore("alice", tmp_path).pinned_key("bob") == KEY_1
    pins.accept("bob", KEY_2)
    assert pins.check("bob", KEY_2) is PinResult.SAME
    assert PinStore("alice", tmp_path).pinned_key("bob") == KEY_2


def test_a_changed_agreement_key_is_a_change_too(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path)
    assert pins.pin("bob", KEY_1, AGREE_1) is PinResult.NEW
    assert pins.check("bob", KEY_1, AGREE_1) is PinResult.SAME
    assert pins.pin("bob", KEY_1, AGREE_2) is PinResult.CHANGED
    assert PinStore("alice", tmp_path).check("bob", KEY_1, AGREE_2) is PinResult.CHANGED
    pins.accept("bob", KEY_1, AGREE_2)
    assert PinStore("alice", tmp_path).check("bob", KEY_1, AGREE_2) is PinResult.SAME


def test_pins_without_an_agreement_key_learn_it_on_first_sight(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path)
    pins.pin("bob", KEY_1)  # as in pin files written before agreement keys were pinned
    assert pins.pin("bob", KEY_1, AGREE_1) is PinResult.SAME
    assert PinStore("alice", tmp_path).check("bob", KEY_1, AGREE_2) is PinResult.CHANGED


def test_verified_mark_survives_restarts_and_is_reset_by_a_key_change(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path)
    with pytest.raises(FailedPrecondition, match="no key pinned for bob"):
        pins.mark_verified("bob", KEY_1)
    pins.pin("bob", KEY_1)
    assert not pins.is_verified("bob")
    pins.mark_verified("bob", KEY_1)
    reopened = PinStore("alice", tmp_path)
    assert reopened.is_verified("bob")
    assert reopened.check("bob", KEY_1) is PinResult.SAME
    assert reopened.pin("bob", KEY_2) is PinResult.CHANGED
    assert reopened.is_verified("bob")  # only seen, not accepted: the verified key is still the pinned one
    reopened.accept("bob", KEY_2)
    assert not reopened.is_verified("bob")
    assert not PinStore("alice", tmp_path).is_verified("bob")


def test_verified_marks_exactly_the_compared_key(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path)
    pins.pin("bob", KEY_1)
    pins.accept("bob", KEY_2)  # changed after the user compared KEY_1's number
    with pytest.raises(FailedPrecondition, match="not the one whose number you compared"):
        pins.mark_verified("bob", KEY_1)
    assert not PinStore("alice", tmp_path).is_verified("bob")


def test_pin_file_is_private_next_to_the_identity(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path)
    pins.pin("bob", KEY_1)
    assert pins.path == tmp_path / "alice.pins.json"
    assert stat.S_IMODE(pins.path.stat().st_mode) == 0o600
    os.chmod(pins.path, 0o644)
    with pytest.raises(KeyStoreError, match="mode 0644"):
        PinStore("alice", tmp_path)


def test_pins_are_per_local_user(tmp_path: Path) -> None:
    PinStore("alice", tmp_path).pin("bob", KEY_1)
    assert PinStore("carol", tmp_path).check("bob", KEY_2) is PinResult.NEW


def test_configured_pins_are_authoritative(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path, configured={"bob": KEY_1.hex()})
    assert pins.is_verified("bob")
    assert pins.check("bob", KEY_1) is PinResult.SAME
    assert pins.check("bob", KEY_2) is PinResult.CHANGED
    with pytest.raises(PinConflict, match="differs from the key pinned in configuration"):
        pins.pin("bob", KEY_2)
    with pytest.raises(PinConflict, match="differs from the key pinned in configuration"):
        pins.accept("bob", KEY_2)
    assert pins.pin("bob", KEY_1) is PinResult.SAME
    assert pins.peers() == ["bob"]


def test_corrupt_pin_file_is_a_clear_error(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path)
    pins.pin("bob", KEY_1)
    pins.path.write_text('{"format": "spartan-pins-v1", "owner": "alice", "peers": {"bob": 3}}')
    with pytest.raises(KeyStoreError, match="corrupt"):
        PinStore("alice", tmp_path)


def test_the_complete_pinned_key_set_is_kept_for_use_after_a_restart(tmp_path: Path) -> None:
    bob = Identity.generate("bob").public_keys()
    pins = PinStore("alice", tmp_path)
    pins.pin("bob", bob.identity_key, bob.agreement_key)  # no signature yet: not complete
    assert pins.pinned_keys("bob") is None
    pins.pin("bob", bob.identity_key, bob.agreement_key, bob.agreement_signature)
    assert PinStore("alice", tmp_path).pinned_keys("bob") == (
        bob.identity_key, bob.agreement_key, bob.agreement_signature)
    pins.pin("bob", bob.identity_key, bob.agreement_key)  # seen again without one: nothing is dropped
    assert PinStore("alice", tmp_path).pinned_keys("bob") is not None
