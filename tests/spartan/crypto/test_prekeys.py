"""Signed prekeys: a new one every day, a replaced one kept 30 days and then deleted, kept in a private file sealed
under the identity's keys and shared by the clients of one user; the signature is checked against a second
Ed25519 implementation."""
from __future__ import annotations

import base64
import json
import logging
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from spartan.crypto import Identity, KeyStoreError
from spartan.crypto.identity import prekey_transcript, verify_prekey
from spartan.crypto.prekeys import (
    DAY_SECONDS,
    FILE_FORMAT,
    KEEP_RETIRED_SECONDS,
    ROTATE_SECONDS,
    WINDOW_DAYS,
    WINDOW_SECONDS,
    OwnPrekeys,
    Prekey,
    prekeys_path,
)
from spartan.errors import InvalidArgument
from tests.spartan.crypto.helpers import START, Clock

BOB = Identity.generate("bob")


def public_of(own: OwnPrekeys, prekey_id: int) -> bytes | None:
    private = own.private(prekey_id)
    return None if private is None else private.public_key().export_key(format="raw")


def test_the_window_is_a_day_of_use_plus_thirty_days_of_keeping() -> None:
    assert ROTATE_SECONDS == DAY_SECONDS and KEEP_RETIRED_SECONDS == 30 * DAY_SECONDS
    assert WINDOW_SECONDS == ROTATE_SECONDS + KEEP_RETIRED_SECONDS and WINDOW_DAYS == 31


def test_the_same_prekey_is_served_until_it_is_a_day_old() -> None:
    clock = Clock()
    own = OwnPrekeys(BOB, clock=clock)
    first = own.current()
    verify_prekey(first, user="bob", identity_key=BOB.identity_key)
    assert first.created_at_s == START and len(first.key) == 32
    assert public_of(own, first.id) == first.key
    clock.advance(ROTATE_SECONDS - 1)
    assert own.current() == first
    assert own.ids() == {first.id}


def test_a_new_prekey_is_made_at_one_day_and_the_replaced_one_kept_30_days_then_deleted() -> None:
    clock = Clock()
    own = OwnPrekeys(BOB, clock=clock)
    first = own.current()
    clock.advance(ROTATE_SECONDS)
    second = own.current()
    verify_prekey(second, user="bob", identity_key=BOB.identity_key)
    assert second.id != first.id and second.key != first.key and second.created_at_s == START + ROTATE_SECONDS
    assert own.ids() == {first.id, second.id}
    assert public_of(own, first.id) == first.key  # replaced, still kept for messages on their way
    assert own._keys[first.id].retired_at_s == START + ROTATE_SECONDS

    clock.advance(KEEP_RETIRED_SECONDS - 1)  # one second short of 30 days after it was replaced
    third = own.current()  # (the second is more than a day old by now: replaced as well)
    assert third.id not in (first.id, second.id)
    assert own.ids() == {first.id, second.id, third.id}
    assert public_of(own, first.id) == first.key

    clock.advance(1)
    assert own.current() == third
    assert own.private(first.id) is None and own.ids() == {second.id, third.id}
    assert public_of(own, second.id) == second.key


def test_a_client_running_every_day_holds_the_last_31_prekeys() -> None:
    clock = Clock()
    own = OwnPrekeys(BOB, clock=clock)
    served = [own.current()]
    for day in range(1, 2 * WINDOW_DAYS):
        clock.advance(DAY_SECONDS)
        served.append(own.current())
        assert len({prekey.id for prekey in served}) == day + 1  # a new one every day
        kept = {prekey.id for prekey in served[-WINDOW_DAYS:]}
        assert own.ids() == kept  # replaced on day k, deleted on day k + 30
        for prekey in served[:-WINDOW_DAYS]:
            assert own.private(prekey.id) is None


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_client_started_after_a_long_pause_deletes_and_rotates_on_the_first_current(
        tmp_path: Path, on_disk: bool) -> None:
    clock = Clock()
    own = OwnPrekeys.for_user(BOB, tmp_path, clock=clock) if on_disk else OwnPrekeys(BOB, clock=clock)
    first = own.current()
    clock.advance(ROTATE_SECONDS)
    second = own.current()
    clock.advance(40 * DAY_SECONDS)  # the client does not run for 40 days
    if on_disk:
        own = OwnPrekeys.for_user(BOB, tmp_path, clock=clock)  # and starts afresh from its file
    assert own.ids() == {first.id, second.id}  # loading deletes nothing yet
    third = own.current()
    assert third.created_at_s == clock() and third.id not in (first.id, second.id)
    assert own.private(first.id) is None  # replaced 40 days ago: deleted
    assert public_of(own, second.id) == second.key  # replaced just now: kept 30 days from now
    assert own.ids() == {second.id, third.id}
    if on_disk:
        assert OwnPrekeys.for_user(BOB, tmp_path, clock=clock).ids() == {second.id, third.id}  # written back


def test_an_unknown_id_is_none() -> None:
    own = OwnPrekeys(BOB, clock=Clock())
    prekey = own.current()
    assert own.private(prekey.id ^ 1) is None
    assert OwnPrekeys(Identity("bob", *BOB.private_seeds()), clock=Clock()).private(prekey.id) is None


def encodings(secret: bytes) -> list[bytes]:
    """The ways a secret could show up in a text file."""
    out = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        out += [encode(secret), encode(secret).rstrip(b"=")]
    return out


def test_the_prekey_file_is_private_and_holds_no_private_seed(tmp_path: Path) -> None:
    clock = Clock()
    own = OwnPrekeys.for_user(BOB, tmp_path, clock=clock)
    for _ in range(3):
        own.current()
        clock.advance(ROTATE_SECONDS)
    own.current()
    path = prekeys_path("bob", tmp_path)
    assert path == tmp_path / "bob.prekeys.json" and own.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    assert json.loads(raw)["format"] == FILE_FORMAT
    seeds = [prekey.seed for prekey in own._keys.values()]
    assert len(seeds) == 4
    for secret in (*seeds, *BOB.private_seeds()):
        for encoded in encodings(secret):
            assert encoded not in raw
    # and yet a fresh load with bob's identity holds the very keys
    again = OwnPrekeys.for_user(BOB, tmp_path, clock=clock)
    assert {prekey.id: prekey.seed for prekey in again._keys.values()} == {
        prekey.id: prekey.seed for prekey in own._keys.values()}


def test_a_file_sealed_under_another_identity_is_replaced_with_a_fresh_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    old_bob = Identity.generate("bob")
    old_prekey = OwnPrekeys.for_user(old_bob, tmp_path, clock=clock).current()
    new_bob = Identity.generate("bob")  # the keys were reset
    with caplog.at_level(logging.WARNING, logger="spartan.crypto.prekeys"):
        own = OwnPrekeys.for_user(new_bob, tmp_path, clock=clock)
    assert "does not open" in caplog.text
    assert own.ids() == set() and own.private(old_prekey.id) is None
    fresh = own.current()
    verify_prekey(fresh, user="bob", identity_key=new_bob.identity_key)
    with pytest.raises(InvalidArgument):
        verify_prekey(fresh, user="bob", identity_key=old_bob.identity_key)
    assert OwnPrekeys.for_user(new_bob, tmp_path, clock=clock).ids() == {fresh.id}  # the file is the new one
    assert OwnPrekeys.for_user(old_bob, tmp_path, clock=clock).ids() == set()


@pytest.mark.parametrize("content", [b"", b"{not json", b"[]", b'{"format": "spartan-prekeys-v1"}',
                                     b'{"nonce": "AAAA", "sealed": "!!", "tag": "AAAA"}'])
def test_a_damaged_file_is_replaced_with_a_fresh_one(tmp_path: Path, content: bytes) -> None:
    path = prekeys_path("bob", tmp_path)
    path.write_bytes(content)
    path.chmod(0o600)
    own = OwnPrekeys.for_user(BOB, tmp_path, clock=Clock())
    assert own.ids() == set()
    fresh = own.current()
    assert OwnPrekeys.for_user(BOB, tmp_path, clock=Clock()).ids() == {fresh.id}


def test_a_tampered_file_is_not_used(tmp_path: Path) -> None:
    clock = Clock()
    prekey = OwnPrekeys.for_user(BOB, tmp_path, clock=clock).current()
    path = prekeys_path("bob", tmp_path)
    outer = json.loads(path.read_bytes())
    sealed = bytearray(base64.b64decode(outer["sealed"]))
    sealed[0] ^= 1
    outer["sealed"] = base64.b64encode(bytes(sealed)).decode()
    path.write_text(json.dumps(outer))
    assert OwnPrekeys.for_user(BOB, tmp_path, clock=clock).private(prekey.id) is None


def test_two_clients_sharing_a_directory_agree_on_one_prekey(tmp_path: Path) -> None:
    clock = Clock()
    laptop = OwnPrekeys.for_user(BOB, tmp_path, clock=clock)
    phone = OwnPrekeys.for_user(BOB, tmp_path, clock=clock)
    first = laptop.current()
    assert phone.current() == first  # read from the file, not made anew
    clock.advance(ROTATE_SECONDS)
    second = laptop.current()
    assert second.id != first.id
    assert phone.current() == second  # the laptop rotated already: the phone serves its prekey, makes none
    assert phone.ids() == laptop.ids() == {first.id, second.id}
    assert public_of(phone, second.id) == second.key
    assert OwnPrekeys.for_user(BOB, tmp_path, clock=clock).ids() == {first.id, second.id}


def test_a_client_finds_the_prekey_another_client_made_and_then_serves_it(tmp_path: Path) -> None:
    """The phone opens a message sealed to the laptop's new prekey first, then seals one of its own."""
    clock = Clock()
    laptop = OwnPrekeys.for_user(BOB, tmp_path, clock=clock)
    phone = OwnPrekeys.for_user(BOB, tmp_path, clock=clock)
    first = laptop.current()
    assert phone.current() == first
    clock.advance(ROTATE_SECONDS)
    second = laptop.current()
    assert public_of(phone, second.id) == second.key  # an unknown id re-reads the file
    assert phone.current() == second  # not the replaced one, and no third prekey either
    assert phone.ids() == laptop.ids() == {first.id, second.id}


# Known answer: a prekey with fixed seeds, signed by bob's identity key (Ed25519 seed 40 41 … 5f); the transcript
# is the documented one, and a second Ed25519 implementation (the `cryptography` package) makes the same signature.
KAT_BOB = Identity("bob", bytes(range(64, 96)), bytes(range(96, 128)))
KAT_PREKEY = Prekey(id=0x0102030405060708, seed=bytes(range(128, 160)), created_at_s=START)
KAT_PREKEY_SIGNATURE = (
    "e3b7d24495dc698028fa5011e34ab9314520c477ecae54919e8e1c2ba03eff6e"
    "9c79ba010dc9ba0fff033c14998ebc81f91c3e32d2939100377f08070395d500"
)


def test_prekey_signature_known_answer_checks_with_a_second_implementation() -> None:
    signed = KAT_PREKEY.signed(KAT_BOB)
    public = X25519PrivateKey.from_private_bytes(KAT_PREKEY.seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert signed.id == KAT_PREKEY.id and signed.key == public and signed.created_at_s == START
    transcript = prekey_transcript("bob", signed.id, signed.key, signed.created_at_s)
    assert transcript == bytes.fromhex(
        "00000011" + b"spartan/v1/prekey".hex()
        + "00000003" + b"bob".hex()
        + "00000008" + "0102030405060708"
        + "00000020" + public.hex()
        + "00000008" + START.to_bytes(8, "big").hex()
    )
    Ed25519PublicKey.from_public_bytes(KAT_BOB.identity_key).verify(signed.signature, transcript)
    assert Ed25519PrivateKey.from_private_bytes(KAT_BOB.private_seeds()[0]).sign(transcript) == signed.signature
    assert signed.signature.hex() == KAT_PREKEY_SIGNATURE
    verify_prekey(signed, user="bob", identity_key=KAT_BOB.identity_key)
    # what `cryptography` signs for a prekey, the product accepts
    other = Prekey(id=7, seed=bytes(range(160, 192)), created_at_s=START + 1)
    by_cryptography = Ed25519PrivateKey.from_private_bytes(KAT_BOB.private_seeds()[0]).sign(
        prekey_transcript("bob", 7, other.public(), START + 1))
    assert by_cryptography == other.signed(KAT_BOB).signature


def test_a_prekeys_file_others_may_read_is_refused_with_one_sentence(tmp_path: Path) -> None:
    identity = Identity.generate("alice")
    OwnPrekeys.for_user(identity, tmp_path).current()
    path = prekeys_path("alice", tmp_path)
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match=r"has mode 0644, so other users may read it; .*chmod 600"):
        OwnPrekeys.for_user(identity, tmp_path)
