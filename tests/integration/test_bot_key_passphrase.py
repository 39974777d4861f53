"""A bot (the headless client) opens a key file protected by a passphrase, as `client.py` does: with the
passphrase it logs in and chats; without it, or with a wrong one, it stops with the key store's sentence."""
from __future__ import annotations

from pathlib import Path

import pytest

from spartan.client.headless import HeadlessClient
from spartan.crypto.keystore import KeyStoreError, load_or_create, save


async def test_a_bot_opens_a_passphrase_protected_key_file(stack_factory, client_factory,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    stack = stack_factory(gateways=1)
    bob = await client_factory("bob", stack.addresses)
    bot_keys = str(tmp_path / "bot-keys")
    identity, _ = load_or_create("alice", bot_keys)
    save(identity, bot_keys, passphrase="correct horse battery")

    with pytest.raises(KeyStoreError, match="passphrase"):
        HeadlessClient("alice", stack.addresses, bot_keys)
    with pytest.raises(KeyStoreError):
        HeadlessClient("alice", stack.addresses, bot_keys, passphrase=lambda: "wrong horse")

    alice = await HeadlessClient("alice", stack.addresses, bot_keys, passphrase=lambda: "correct horse battery").start()
    try:
        assert alice.conn.identity.identity_key == identity.identity_key
        await alice.send("bob", "from a bot whose key file is protected")
        assert [r.text for r in await bob.wait_for(1)] == ["from a bot whose key file is protected"]
    finally:
        await alice.close()
