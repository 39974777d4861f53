"""The delivery log with real processes: every message reaches its recipients exactly once.

Proven here, against the shipped config (5 messages of recent history per
conversation, so any recovery of more than 5 messages reads the delivery log, not
the history cache): a gateway SIGKILLed mid-conversation, a client coming back with
its positions on disk, a client process SIGKILLed and restarted mid-stream, hundreds
of messages to an offline user (also several replay pages while more are sent), an
offline group member, a chat accept published while the requester was away. When Redis
loses or bounds what it keeps: test_delivery_bounds.py.

Every stack raises only the send rate (SENDS): these tests send far more than the
shipped 3 calls per 30 s per user. Other settings changed by a test say why where
they are set.
"""
from __future__ import annotations

import asyncio

import pytest

from spartan import naming
from spartan.client.headless import HeadlessClient
from spartan.v1 import pb
from tests.support.delivery import (
    DM,
    SENDS,
    assert_exactly,
    chats,
    kept_position,
    read_lines,
    read_rest,
    read_until,
    register,
    replayed_on_second_stream,
    send_all,
    spawn_reader,
    texts,
)


@pytest.mark.on_cluster  # and on a Redis Cluster of 3 primaries and 3 replicas
async def test_gateway_sigkill_mid_conversation_loses_nothing_beyond_history(stack_factory, open_client) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    alice = await open_client("alice", [stack.address(1)])
    arrivals: list[pb.Message] = []
    bob = await open_client("bob", [stack.address(2), stack.address(1)], arrivals=arrivals)
    await bob.synced.wait()
    expected = texts("m", 30)

    await send_all(alice, "bob", expected[:10], pace=0.01)
    await bob.wait_for(10)
    stack.kill("gateway-2")
    # Sent back to back: the receiver waits at least 0.2 s before it fails over, so these
    # 20 are in the log before bob's new stream opens; history holds only the last 5.
    await send_all(alice, "bob", expected[10:])
    received = await bob.wait_for(30, timeout=60)
    await alice.send("bob", "sentinel")  # anything still to come twice would come before this
    await bob.wait_for(31, timeout=30)
    assert_exactly([r.text for r in received[:30]], expected)
    assert bob.conn.address == stack.address(1)
    delivered = [m.id for m in chats(arrivals)]
    assert len(delivered) == len(set(delivered)) == 31, "the stream delivered a message twice"
    assert [m.offset for m in chats(arrivals)] == list(range(1, 32))
    assert replayed_on_second_stream(arrivals, 10) > 5, "recovery must have read more than history holds"


async def test_new_client_with_positions_on_disk_gets_only_what_it_lacks(stack_factory, open_client) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    alice = await open_client("alice", [stack.address(1)])
    bob = await open_client("bob", [stack.address(2)], persist=True)
    await alice.send("bob", "before")
    assert [r.text for r in await bob.wait_for(1)] == ["before"]
    await bob.close()

    expected = texts("away", 8)
    await send_all(alice, "bob", expected)
    arrivals: list[pb.Message] = []
    later = await open_client("bob", [stack.address(1)], arrivals=arrivals, persist=True)
    await later.wait_for(8, timeout=30)
    await later.synced.wait()
    await alice.send("bob", "sentinel")
    await later.wait_for(9, timeout=30)
    assert_exactly(later.texts(), [*expected, "sentinel"])
    assert [m.offset for m in chats(arrivals)] == list(range(2, 11))  # offset 1 ("before") never again


@pytest.mark.on_cluster  # and on a Redis Cluster of 3 primaries and 3 replicas
async def test_two_hundred_messages_to_an_offline_user_arrive_in_order_then_synced(
        stack_factory, open_client) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    await register(open_client, "bob", [stack.address(2)])
    alice = await open_client("alice", [stack.address(1)])
    expected = texts("offline", 200)
    await send_all(alice, "bob", expected)

    arrivals: list[pb.Message] = []
    bob = await open_client("bob", [stack.address(2)], arrivals=arrivals)
    await asyncio.wait_for(bob.synced.wait(), 60)
    received = await bob.wait_for(200, timeout=60)
    assert_exactly([r.text for r in received], expected)
    kinds = [m.kind for m in arrivals if m.kind in (pb.CHAT, pb.SYNCED)]
    assert kinds == [pb.CHAT] * 200 + [pb.SYNCED], "SYNCED must follow everything that waited"
    assert not [m for m in arrivals if m.kind == pb.NOTICE], "nothing was lost, so nothing is announced"


async def test_backlog_of_several_replay_pages_while_the_sender_goes_on(stack_factory, open_client) -> None:
    """401 waiting messages are three pages of the gateway's replay (200 each); 50 more are sent
    while bob's stream opens, so replay and live delivery overlap."""
    stack = stack_factory(gateways=2, settings=SENDS)
    await register(open_client, "bob", [stack.address(2)])
    alice = await open_client("alice", [stack.address(1)])
    backlog, during = texts("backlog", 401), texts("during", 50)
    await send_all(alice, "bob", backlog)

    arrivals: list[pb.Message] = []
    sending = asyncio.create_task(send_all(alice, "bob", during, pace=0.005))
    bob = await open_client("bob", [stack.address(2)], arrivals=arrivals)
    await asyncio.wait_for(sending, 60)
    await bob.wait_for(451, timeout=60)
    await alice.send("bob", "sentinel")
    await bob.wait_for(452, timeout=30)
    assert_exactly(bob.texts(), [*backlog, *during, "sentinel"])
    assert [m.offset for m in chats(arrivals)] == list(range(1, 453)), "the stream delivered a message twice"


async def test_client_process_sigkilled_and_restarted_prints_each_message_once(stack_factory, tmp_path) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    key_dir = str(tmp_path / "reader-keys")
    errors = tmp_path / "reader.stderr"
    first = await spawn_reader(stack.address(2), "bob", key_dir, errors)
    second: asyncio.subprocess.Process | None = None
    alice = HeadlessClient("alice", [stack.address(1)], str(tmp_path / "keys"), encrypt=False)
    await alice.start()
    try:
        expected = texts("live", 60)
        sending = asyncio.create_task(send_all(alice, "bob", [*expected, "end"], pace=0.1))
        printed_first = await read_lines(first, 20, timeout=30)
        # SIGKILL right after a line appeared: the instant most likely to fall between showing a
        # message and keeping its position on disk. The client shows first and records next, so a
        # kill in that instant shows that one message again after the restart (never loses it);
        # any other repeat is a bug.
        first.kill()
        await asyncio.wait_for(first.wait(), 10)
        printed_first += await read_rest(first)
        kept = kept_position(key_dir, "bob", DM)
        second = await spawn_reader(stack.address(1), "bob", key_dir, errors)
        printed_second = await read_until(second, "end", timeout=60)
        await asyncio.wait_for(sending, 30)
        union = [*printed_first, *printed_second]
        assert union[-1] == "end"
        duplicates = sorted({line for line in union if union.count(line) > 1})
        in_flight = [printed_first[-1]] if kept is not None and kept[1] == len(printed_first) - 1 else []
        assert duplicates in ([], in_flight), (
            f"printed by both processes: {duplicates}; the killed one printed "
            f"{len(printed_first)} lines and had kept position {kept}")
        assert list(dict.fromkeys(union))[:-1] == expected
    finally:
        await alice.close()
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.on_cluster  # and on a Redis Cluster of 3 primaries and 3 replicas
async def test_offline_group_member_gets_every_group_message_decrypted(stack_factory, open_client) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    await register(open_client, "eve", [stack.address(2)])
    alice = await open_client("alice", [stack.address(1)])
    expected = texts("group", 50)
    for text in expected:
        await alice.send_group("group1", text)

    eve = await open_client("eve", [stack.address(2)])
    await eve.wait_until(lambda: len(eve.received_in("group1")) >= 50, timeout=60)
    await alice.send_group("group1", "sentinel")
    await eve.wait_until(lambda: len(eve.received_in("group1")) >= 51, timeout=30)
    got = eve.received_in("group1")
    assert all(r.text is not None for r in got), "a group message could not be decrypted"
    assert_exactly([r.text for r in got], [*expected, "sentinel"])
    assert {r.sender for r in got} == {"alice"}


async def test_accept_published_while_the_requester_was_away_reaches_them(stack_factory, open_client) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    bob = await open_client("bob", [stack.address(2)])
    alice = await open_client("alice", [stack.address(1)], persist=True)
    await alice.call("RequestChat", pb.ChatRequest(peer="bob"))
    await bob.wait_event(pb.CHAT_REQUEST)
    await alice.close()

    await bob.call("RespondChat", pb.ChatRequest(peer="alice", accept=True))
    back = await open_client("alice", [stack.address(2)], persist=True)
    accept = await back.wait_event(pb.CHAT_ACCEPT, timeout=30)
    assert accept.sender == "bob" and accept.recipient == "alice"
    assert accept.conversation == naming.inbox_conversation("alice") and accept.offset >= 1
