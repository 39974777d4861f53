"""Stricter set-ups: one-time enrolment codes for first registration, and keys pinned in config."""
from __future__ import annotations

import grpc
import pytest

from spartan.client.headless import HeadlessClient
from spartan.crypto.keystore import load_or_create
from spartan.errors import SpartanError


async def test_first_registration_needs_the_enrolment_code(stack_factory, client_factory, tmp_path) -> None:
    stack = stack_factory(gateways=1, settings={"SPARTAN_AUTH__ENROLMENT_CODES": "{alice: open-sesame}"})
    keys = str(tmp_path / "keys")
    for code in ("", "wrong"):
        intruder = HeadlessClient("alice", [stack.address(1)], keys)
        intruder.conn.enrolment_code = code
        with pytest.raises(SpartanError) as refused:
            await intruder.conn.open()
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "enrolment code" in refused.value.message
        await intruder.conn.close()

    alice = HeadlessClient("alice", [stack.address(1)], keys)
    alice.conn.enrolment_code = "open-sesame"
    await alice.start()
    bob = await client_factory("bob", [stack.address(1)])  # no code configured for bob
    await alice.send("bob", "enrolled")
    assert [r.text for r in await bob.wait_for(1)] == ["enrolled"]
    await alice.close()
    again = await client_factory("alice", [stack.address(1)])  # registered: the code is not needed again
    assert again.conn.token


async def test_only_the_pinned_key_logs_in(stack_factory, client_factory, tmp_path) -> None:
    pinned, _ = load_or_create("charlie", str(tmp_path / "pinned"))
    stack = stack_factory(gateways=1, settings={
        "SPARTAN_AUTH__PINNED_KEYS": f"{{charlie: {pinned.public_keys().identity_key.hex()}}}"})
    other = HeadlessClient("charlie", [stack.address(1)], str(tmp_path / "other"))
    with pytest.raises(SpartanError) as refused:
        await other.conn.open()
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    await other.conn.close()

    charlie = HeadlessClient("charlie", [stack.address(1)], str(tmp_path / "pinned"))
    await charlie.start()
    alice = await client_factory("alice", [stack.address(1)])
    await alice.send("charlie", "to the pinned key")  # the pinned key went into the directory
    assert [r.text for r in await charlie.wait_for(1)] == ["to the pinned key"]
    await charlie.close()
