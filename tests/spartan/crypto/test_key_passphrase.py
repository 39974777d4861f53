"""A key file protected by a passphrase: scrypt (N=2^17, r=8, p=1) then AES-256-GCM over the two seeds.

The bytes on disk hold no seed, a wrong passphrase changes nothing, and the wrapping is
pinned by a known answer that a second implementation (the `cryptography` package's
Scrypt and AESGCM) decrypts.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from spartan.crypto import Identity, KeyStoreError, key_path, load, load_or_create, save
from spartan.crypto import passphrase as wrapping
from spartan.crypto.keystore import PassphraseRequired, WrongPassphrase, is_protected
from spartan.errors import InvalidArgument

PASSPHRASE = "correct horse battery staple"
# Known answer, derived with this implementation and checked below with `cryptography`.
KAT_USER = "alice"
KAT_SIGNING_SEED = bytes(range(32))
KAT_AGREEMENT_SEED = bytes(range(32, 64))
KAT_IDENTITY_KEY = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
KAT_SALT = bytes(range(100, 116))
KAT_NONCE = bytes(range(200, 212))
KAT_WRAPPING_KEY = "81371070d43b92ae6af93db19b362d8b8b07a2c68c60012a59eb1f1b6ee8fa6e"
KAT_CIPHERTEXT = ("8911c1c6018281402aec7895be52a4e49ab1a58db3c92b34ccf97cf0d590e5b4"
                  "a311015a9236105ddcfd12f0f969ce67cb6055d5448908c6cd523c6872fd8bee"
                  "0453d73a0073370200ed301b4bc872fe")  # 64 bytes of sealed seeds, then the 16-byte tag
KAT_ASSOCIATED_DATA = ("00000013" + b"spartan/v1/key-file".hex() + "00000005" + b"alice".hex()
                       + "00000020" + KAT_IDENTITY_KEY + "00000010" + KAT_SALT.hex()
                       + "00000008" + (2**17).to_bytes(8, "big").hex()
                       + "00000008" + (8).to_bytes(8, "big").hex()
                       + "00000008" + (1).to_bytes(8, "big").hex())


def kat_identity() -> Identity:
    return Identity(KAT_USER, KAT_SIGNING_SEED, KAT_AGREEMENT_SEED)


def test_wrapping_known_answer() -> None:
    identity = kat_identity()
    assert identity.identity_key.hex() == KAT_IDENTITY_KEY
    assert wrapping.wrapping_key(PASSPHRASE, KAT_SALT, 2**17, 8, 1).hex() == KAT_WRAPPING_KEY
    assert wrapping.associated_data(KAT_USER, identity.identity_key, KAT_SALT, 2**17, 8, 1).hex() \
        == KAT_ASSOCIATED_DATA
    sealed = wrapping.wrap(KAT_SIGNING_SEED + KAT_AGREEMENT_SEED, PASSPHRASE, user=KAT_USER,
                           identity_key=identity.identity_key, salt=KAT_SALT, nonce=KAT_NONCE)
    assert (sealed.n, sealed.r, sealed.p) == (2**17, 8, 1)  # the stated parameters are the defaults
    assert sealed.ciphertext.hex() == KAT_CIPHERTEXT


def test_known_answer_decrypts_with_a_second_implementation() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    key = Scrypt(salt=KAT_SALT, length=32, n=2**17, r=8, p=1).derive(PASSPHRASE.encode("utf-8"))
    assert key.hex() == KAT_WRAPPING_KEY
    seeds = AESGCM(key).decrypt(KAT_NONCE, bytes.fromhex(KAT_CIPHERTEXT), bytes.fromhex(KAT_ASSOCIATED_DATA))
    assert seeds == KAT_SIGNING_SEED + KAT_AGREEMENT_SEED


def test_a_protected_file_holds_no_seed_and_loads_only_with_the_passphrase(tmp_path: Path) -> None:
    identity = kat_identity()
    path = save(identity, tmp_path, passphrase=PASSPHRASE)
    raw = path.read_bytes()
    for seed in identity.private_seeds():  # neither raw, hex nor base64 anywhere in the file
        assert seed not in raw and seed.hex().encode() not in raw and base64.b64encode(seed) not in raw
    document = json.loads(raw)
    assert document["format"] == "spartan-identity-v1-passphrase"
    assert document["scrypt"]["n"] == 2**17 and document["scrypt"]["r"] == 8 and document["scrypt"]["p"] == 1
    assert is_protected("alice", tmp_path)
    with pytest.raises(PassphraseRequired, match="protected by a passphrase"):
        load("alice", tmp_path)
    with pytest.raises(PassphraseRequired):
        load_or_create("alice", tmp_path)  # never replaced by a fresh key
    loaded = load("alice", tmp_path, passphrase=lambda: PASSPHRASE)
    assert loaded.private_seeds() == identity.private_seeds()
    # The same characters in another Unicode normalisation unlock it too.
    save(identity, tmp_path, passphrase="caf\u00e9")
    assert load("alice", tmp_path, passphrase=lambda: "cafe\u0301").identity_key == identity.identity_key


def test_a_wrong_passphrase_is_one_sentence_and_changes_nothing(tmp_path: Path) -> None:
    path = save(Identity.generate("alice"), tmp_path, passphrase=PASSPHRASE)
    before = path.read_bytes()
    with pytest.raises(WrongPassphrase) as wrong:
        load_or_create("alice", tmp_path, passphrase=lambda: "not it")
    assert str(wrong.value) == f"wrong passphrase for the key file of alice ({path}); nothing was changed"
    assert path.read_bytes() == before


def test_unprotected_files_load_without_asking(tmp_path: Path) -> None:
    identity, created = load_or_create("bob", tmp_path, passphrase=lambda: pytest.fail("asked"))
    assert created and not is_protected("bob", tmp_path)
    assert load("bob", tmp_path, passphrase=lambda: pytest.fail("asked")).identity_key == identity.identity_key


def test_adding_changing_and_removing_the_passphrase_keeps_the_keys(tmp_path: Path) -> None:
    identity = Identity.generate("carol")
    save(identity, tmp_path)
    save(identity, tmp_path, passphrase="first")
    save(load("carol", tmp_path, passphrase=lambda: "first"), tmp_path, passphrase="second")
    with pytest.raises(WrongPassphrase):
        load("carol", tmp_path, passphrase=lambda: "first")
    save(load("carol", tmp_path, passphrase=lambda: "second"), tmp_path, passphrase=None)
    assert not is_protected("carol", tmp_path)
    assert load("carol", tmp_path).private_seeds() == identity.private_seeds()


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("change, reason", [
    (lambda d: d.update(user="mallory"), "wrong passphrase"),  # bound in the associated data
    (lambda d: d["scrypt"].update(n=2**16), "wrong passphrase"),
    (lambda d: d["scrypt"].update(n=2**30), "scrypt N must be a power of two"),  # would exhaust memory
    (lambda d: d["scrypt"].update(n=2**10), "scrypt N must be a power of two"),  # weakened
    (lambda d: d["scrypt"].update(n=3 * 2**16), "scrypt N must be a power of two"),
    (lambda d: d["scrypt"].update(r=17), "scrypt r must be 1 to 16 and p 1 to 4"),
    (lambda d: d["scrypt"].update(p=5), "scrypt r must be 1 to 16 and p 1 to 4"),
    (lambda d: d["aes_256_gcm"].update(ciphertext="AAAA"), "truncated"),
    (lambda d: d.pop("scrypt"), "corrupt"),
])
def test_an_altered_protected_file_is_refused(tmp_path: Path, change, reason: str) -> None:  # type: ignore[no-untyped-def]
    path = save(Identity.generate("alice"), tmp_path, passphrase=PASSPHRASE)
    _edit(path, change)
    with pytest.raises(KeyStoreError, match=reason):
        load("alice", tmp_path, passphrase=lambda: PASSPHRASE)


def test_an_empty_passphrase_cannot_protect_a_key(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot be empty"):
        save(Identity.generate("alice"), tmp_path, passphrase="")
    assert not key_path("alice", tmp_path).exists()
