"""What the malicious-server tests share: acting as the server (swapping keys in the directory, publishing
into a user's channel, forging chats) and the piped CLI that also reads its status line."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import redis as redis_sync

from services.presence.store import KEYS as KEY_DIRECTORY
from services.presence.store import PREKEYS
from spartan import naming
from spartan.crypto.identity import Identity
from spartan.crypto.pairwise import (
    PairwiseCipher,
)
from spartan.crypto.prekeys import OwnPrekeys
from spartan.crypto.safety import format_rows
from spartan.v1 import pb
from tests.support.piped_cli import PipedCli
from tests.support.stack import Stack

DM = naming.dm_conversation("alice", "bob")


class Cli(PipedCli):
    """The piped CLI, also collecting standard error (where the send queue's status line goes)."""

    def __init__(self, user: str, stack: Stack, key_dir: Path) -> None:
        super().__init__(user, stack, key_dir, 1)
        self.errors: list[str] = []
        threading.Thread(target=self._pump_errors, daemon=True).start()

    def _pump_errors(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.errors.append(line.rstrip("\n"))

    def wait_error(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.errors if text in line]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no status line with {text!r}; got {self.errors}")


class Impostor:
    """The server posing as a user: its own identity and prekeys, validly self-signed."""

    def __init__(self, user: str) -> None:
        self.identity = Identity.generate(user)
        self.identity_key = self.identity.identity_key
        self.prekeys = OwnPrekeys(self.identity)

    def public_keys(self) -> pb.PublicKeys:
        keys = self.identity.public_keys()
        keys.prekey.CopyFrom(self.prekeys.current())
        return keys

    def cipher(self, peer: str, peer_keys: pb.PublicKeys) -> PairwiseCipher:
        return PairwiseCipher(self.identity, peer, peer_keys, self.prekeys)


def swap_keys(url: str, impostor: Impostor) -> None:
    """The server's move: put its own keys and prekey for the impostor's user into the directory."""
    put_keys(url, impostor.public_keys())


def put_keys(url: str, keys: pb.PublicKeys) -> None:
    """Write `keys` into the directory as presence keeps them: the prekey (if any) in its own hash."""
    registered = pb.PublicKeys()
    registered.CopyFrom(keys)
    registered.ClearField("prekey")
    client = redis_sync.Redis.from_url(url)
    try:
        client.hset(KEY_DIRECTORY, keys.user, registered.SerializeToString())
        if keys.HasField("prekey"):
            client.hset(PREKEYS, keys.user, keys.prekey.SerializeToString())
    finally:
        client.close()


def directory_keys(url: str, user: str) -> pb.PublicKeys:
    """The user's registered keys with their current prekey, as the directory answers them."""
    client = redis_sync.Redis.from_url(url)
    try:
        keys = pb.PublicKeys.FromString(client.hget(KEY_DIRECTORY, user))
        keys.prekey.ParseFromString(client.hget(PREKEYS, user))
        return keys
    finally:
        client.close()


def registered_keys(url: str, user: str) -> pb.PublicKeys:
    """The user's registered keys alone (the directory's first hash)."""
    client = redis_sync.Redis.from_url(url)
    try:
        return pb.PublicKeys.FromString(client.hget(KEY_DIRECTORY, user))
    finally:
        client.close()


def publish(url: str, user: str, *messages: pb.Message) -> None:
    """Push messages straight into `user`'s pub/sub channel, as a compromised server can."""
    client = redis_sync.Redis.from_url(url)
    try:
        for message in messages:
            client.spublish(naming.user_channel(user), message.SerializeToString())
    finally:
        client.close()


def key_update(user: str) -> pb.Message:
    return pb.Message(kind=pb.KEY_UPDATE, sender=user, id=uuid.uuid4().hex[:32])


def chat_from(sender: str, recipient: str, body: bytes, message_id: str | None = None) -> pb.Message:
    return pb.Message(id=message_id or uuid.uuid4().hex, kind=pb.CHAT, sender=sender, recipient=recipient,
                      conversation=naming.dm_conversation(sender, recipient), body=body)


def forged_chats(cipher: PairwiseCipher, texts: list[str], prefix: str) -> list[pb.Message]:
    """1:1 messages to alice "from bob" sealed with `cipher` (an impostor's keys), ids `<prefix>-<i>`."""
    chats = []
    for i, text in enumerate(texts):
        message_id = f"{prefix}-{i}"
        body = cipher.encrypt(text.encode(), message_id=message_id, sender="bob", recipient="alice", conversation=DM)
        chats.append(chat_from("bob", "alice", body, message_id))
    return chats


def number_rows(number: str) -> list[str]:
    return ["[Spartan]     " + row for row in format_rows(number)]


async def wait_until(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
