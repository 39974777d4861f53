"""A 1:1 conversation's first message on a gateway: both users' streams are told to follow its channel
before the message is kept, so no stream misses it, and a failure part way fails the send.

The real send path on the shipped config.yaml (3 sends per 30 s: each test sends at most three)
and a private redis-server; mailboxes stand in for the streams of alice and bob.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.gateway.hub import PubSubHub
from services.gateway.send_path import SendPath, open_send_path
from spartan import naming
from spartan.config import load_config
from spartan.errors import Unavailable
from spartan.v1 import pb
from tests.support.mailbox import RecordingMailbox

ROOT = Path(__file__).resolve().parents[3]
DM = naming.dm_conversation("alice", "bob")


def send_path(redis: Redis) -> SendPath:
    return open_send_path(load_config(ROOT / "config.yaml"), redis, groups=None)  # type: ignore[arg-type]


def chat(text: str) -> pb.Message:
    return pb.Message(id=text, kind=pb.CHAT, recipient="bob", body=text.encode())


async def test_both_users_are_told_once_and_the_conversation_is_indexed_before_its_first_message(
        gateway_redis: Redis, hub: PubSubHub) -> None:
    inboxes = {user: RecordingMailbox(user) for user in ("alice", "bob")}
    for user, mailbox in inboxes.items():
        await hub.subscribe(mailbox, [naming.user_channel(user)])
    conversation = RecordingMailbox("dm")
    path = send_path(gateway_redis)
    try:
        await path.send("alice", chat("first"))
        for mailbox in inboxes.values():
            (start,) = await mailbox.wait_for(1)
            assert (start.kind, start.conversation) == (pb.CONVERSATION, DM)
        for user in ("alice", "bob"):
            assert await path.delivery.dm_conversations(user) == [DM]
        await hub.subscribe(conversation, [naming.conversation_channel(DM)])  # what a stream does when told
        await path.send("alice", chat("second"))
        await conversation.wait_for(1)
        assert conversation.ids == ["second"]  # "first" was kept before: the stream reads it from the log
        assert [len(m.messages) for m in inboxes.values()] == [1, 1], "told once per gateway, not per message"
    finally:
        await path.aclose()


async def test_a_failure_before_both_users_were_told_fails_the_send_and_the_retry_tells_them(
        gateway_redis: Redis, hub: PubSubHub, monkeypatch: pytest.MonkeyPatch) -> None:
    bob = RecordingMailbox("bob")
    await hub.subscribe(bob, [naming.user_channel("bob")])
    execute = Pipeline.execute
    failures = iter([True])

    async def failing_once(self: Pipeline, *args: object, **kwargs: object) -> object:
        if "SPUBLISH" in str(self.command_stack) and next(failures, False):
            raise redis.exceptions.ConnectionError("Redis went away")
        return await execute(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Pipeline, "execute", failing_once)
    path = send_path(gateway_redis)
    try:
        with pytest.raises(Unavailable, match="could not start the conversation"):
            await path.send("alice", chat("first"))
        page = await path.delivery.read(DM, 0, 10)
        assert page.messages == [], "a send that failed keeps nothing (the client sends it again)"
        ack = await path.send("alice", chat("first"))  # the client's retry
        assert ack.offset == 1
        (start,) = await bob.wait_for(1)
        assert (start.kind, start.conversation) == (pb.CONVERSATION, DM)
    finally:
        await path.aclose()
