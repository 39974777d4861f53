"""Pinned peer keys: trust on first use, loud CHANGED, verified marks reset by a key change."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from spartan.crypto import Identity, KeyStoreError, PinConflict, PinResult, PinStore
from spartan.errors import FailedPrecondition

KEY_1 = Identity.generate("bob").identity_key
KEY_2 = Identity.generate("bob").identity_key


def test_new_same_changed(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path)
    assert pins.check("bob", KEY_1) is PinResult.NEW
    assert pins.check("bob", KEY_1) is PinResult.NEW  # check alone changes nothing
    assert pins.pin("bob", KEY_1) is PinResult.NEW
    assert pins.check("bob", KEY_1) is PinResult.SAME
    assert pins.check("bob", KEY_2) is PinResult.CHANGED
    assert pins.pinned_key("bob") == KEY_1
    assert pins.observe("bob", KEY_2) is PinResult.CHANGED
    assert pins.check("bob", KEY_2) is PinResult.SAME
    assert pins.pinned_key("bob") == KEY_2


def test_verified_mark_survives_restarts_and_is_reset_by_a_key_change(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path)
    with pytest.raises(FailedPrecondition, match="no key pinned for bob"):
        pins.mark_verified("bob")
    pins.pin("bob", KEY_1)
    assert not pins.is_verified("bob")
    pins.mark_verified("bob")
    reopened = PinStore("alice", tmp_path)
    assert reopened.is_verified("bob")
    assert reopened.check("bob", KEY_1) is PinResult.SAME
    assert reopened.pin("bob", KEY_2) is PinResult.CHANGED
    assert not reopened.is_verified("bob")
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
    assert pins.pin("bob", KEY_1) is PinResult.SAME
    assert pins.peers() == ["bob"]


def test_corrupt_pin_file_is_a_clear_error(tmp_path: Path) -> None:
    pins = PinStore("alice", tmp_path)
    pins.pin("bob", KEY_1)
    pins.path.write_text('{"format": "spartan-pins-v1", "owner": "alice", "peers": {"bob": 3}}')
    with pytest.raises(KeyStoreError, match="corrupt"):
        PinStore("alice", tmp_path)
