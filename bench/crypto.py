"""What end-to-end encryption costs per message and per login, on this machine.

Run: `python3 -m bench.crypto [--seconds 0.5]` (or `python3 -m bench crypto [--quick]`).
Prints one table of µs per operation (median and best of several timed rounds). Compare
with the per-message costs of the gRPC hops in docs/DESIGN.md: a unary call is about 130 µs
of server CPU.

1:1 rows are envelope version 4 (sealed to the recipient's and the sender's signed
prekeys with a fresh ephemeral X25519 key: two key agreements to seal, one to open),
plus opening a version 3 envelope (static key) for comparison; `OwnPrekeys.current()`
is what every seal asks for (its fast path), a rotation what it costs once a day.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from Crypto.Cipher import AES

from bench.summary import format_table
from spartan.crypto import (
    ChallengeIssuer,
    Identity,
    PairwiseCipher,
    SenderKey,
    TokenIssuer,
    decrypt_group,
    encrypt_group,
    login_transcript,
    safety_number,
    verify_login,
    verify_public_keys,
)
from spartan.crypto.padding import pad
from spartan.crypto.pairwise import STATIC_ENVELOPE_VERSION, associated_data, derive_pairwise_key, signed_transcript
from spartan.crypto.prekeys import DAY_SECONDS, OwnPrekeys
from spartan.v1 import pb

ROUNDS = 5


def measure(operation: Callable[[], object], seconds: float) -> tuple[float, float]:
    """(median, best) µs per call over ROUNDS rounds, each sized to take about `seconds / ROUNDS`.

    The best round is the cost with the least interference from other processes.
    """
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < 0.05:
        operation()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    batch = max(1, int(seconds / ROUNDS / per_call))
    samples = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        for _ in range(batch):
            operation()
        samples.append((time.perf_counter() - began) / batch * 1e6)
    return statistics.median(samples), min(samples)


def keys_with_prekey(identity: Identity, prekeys: OwnPrekeys) -> pb.PublicKeys:
    """What the key directory serves: the identity's keys with its current signed prekey."""
    keys = identity.public_keys()
    keys.prekey.CopyFrom(prekeys.current())
    return keys


def static_envelope(sender: Identity, key: bytes, plaintext: bytes, route: dict[str, str]) -> bytes:
    """A version 3 envelope (static key, no prekeys), as clients sealed them before version 4."""
    nonce = bytes(12)
    associated = associated_data(**route, version=STATIC_ENVELOPE_VERSION)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(associated)
    ciphertext, tag = cipher.encrypt_and_digest(pad(plaintext))
    sealed = bytes((STATIC_ENVELOPE_VERSION,)) + nonce + ciphertext + tag
    return sealed + sender.sign(signed_transcript(associated, sealed))


def pairwise_cases(size: int) -> dict[str, Callable[[], object]]:
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    alice_prekeys, bob_prekeys = OwnPrekeys(alice), OwnPrekeys(bob)  # in memory
    sender = PairwiseCipher(alice, "bob", keys_with_prekey(bob, bob_prekeys), alice_prekeys)
    receiver = PairwiseCipher(bob, "alice", keys_with_prekey(alice, alice_prekeys), bob_prekeys)
    route = {"message_id": "0123456789abcdef", "sender": "alice", "recipient": "bob",
             "conversation": "dm:alice:bob"}
    plaintext = b"x" * size

    def round_trip() -> None:
        receiver.decrypt(sender.encrypt(plaintext, **route), **route)

    envelope = sender.encrypt(plaintext, **route)
    old = static_envelope(alice, sender.static_key, plaintext, route)
    return {
        f"pairwise encrypt {size} B": lambda: sender.encrypt(plaintext, **route),
        f"pairwise decrypt {size} B": lambda: receiver.decrypt(envelope, **route),
        f"pairwise encrypt+decrypt {size} B": round_trip,
        f"pairwise decrypt own copy {size} B": lambda: sender.decrypt(envelope, **route),
        f"pairwise decrypt v3 (static key) {size} B": lambda: receiver.decrypt(old, **route),
    }


def group_cases(size: int) -> dict[str, Callable[[], object]]:
    alice = Identity.generate("alice")
    key = SenderKey.generate("friends", "alice", 1)
    plaintext = b"x" * size
    route = {"message_id": "0123456789abcdef", "group": "friends"}

    def open_one(envelope: bytes) -> bytes:
        return decrypt_group(envelope, sender_identity_key=alice.identity_key, sender_key=key, **route)

    envelope = encrypt_group(alice, key, plaintext, **route)
    return {
        f"group encrypt+sign {size} B": lambda: encrypt_group(alice, key, plaintext, **route),
        f"group verify+decrypt {size} B": lambda: open_one(envelope),
        f"group encrypt+decrypt {size} B": lambda: open_one(encrypt_group(alice, key, plaintext, **route)),
    }


def setup_cases() -> dict[str, Callable[[], object]]:
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    alice_prekeys = OwnPrekeys(alice)
    bob_keys = bob.public_keys()
    bob_keys_with_prekey = keys_with_prekey(bob, OwnPrekeys(bob))
    day = [0.0]

    def next_day() -> float:
        day[0] += DAY_SECONDS
        return day[0]

    rotating = OwnPrekeys(alice, clock=next_day)  # every call a day later: a new prekey, and one deleted
    for _ in range(40):
        rotating.current()  # steady state: 31 kept
    secret = b"bench-secret-0123456789abcdef"
    deployment = "bench"
    challenges = ChallengeIssuer(secret, 60, deployment_id=deployment)
    tokens = TokenIssuer(secret, 3600, deployment_id=deployment)

    def login() -> None:
        nonce, _ = challenges.issue("alice")  # gateway
        signature = alice.sign(login_transcript(deployment, "alice", nonce, alice.identity_key))  # client
        verify_login(challenges, user="alice", nonce=nonce, signature=signature,  # gateway
                     identity_key=alice.identity_key, registered_key=alice.identity_key)
        tokens.issue("alice", alice.identity_key)

    token, _ = tokens.issue("alice", alice.identity_key)
    return {
        "identity generate": lambda: Identity.generate("carol"),
        "verify_public_keys": lambda: verify_public_keys(bob_keys),
        "verify_public_keys with prekey": lambda: verify_public_keys(bob_keys_with_prekey),
        "pairwise key derivation (X25519+HKDF)": lambda: derive_pairwise_key(alice, "bob", bob_keys),
        "new PairwiseCipher (verify keys + prekey)":
            lambda: PairwiseCipher(alice, "bob", bob_keys_with_prekey, alice_prekeys),
        "OwnPrekeys.current() (fast path)": alice_prekeys.current,
        "prekey rotation (in memory: new key + sign)": rotating.current,
        "sender key generate": lambda: SenderKey.generate("friends", "alice", 1),
        "login (challenge+sign+verify+token)": login,
        "session token verify": lambda: tokens.verify(token),
        "safety number": lambda: safety_number("alice", alice.identity_key, "bob", bob.identity_key),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time budget per operation")
    args = parser.parse_args()
    cases: dict[str, Callable[[], object]] = {}
    for size in (64, 4096):
        cases |= pairwise_cases(size)
    for size in (64, 4096):
        cases |= group_cases(size)
    cases |= setup_cases()
    rows = []
    for name, operation in cases.items():
        median, best = measure(operation, args.seconds)
        rows.append([name, f"{median:.1f}", f"{best:.1f}", f"{1e6 / best:.0f}"])
    print(format_table(["operation", "µs/op median", "µs/op best", "ops/s best"], rows))

if __name__ == "__main__":
    main()
