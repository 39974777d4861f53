"""The delivery log with real processes: every message reaches its recipients exactly once.

Proven here, against the shipped config (5 messages of recent history per
conversation, so any recovery of more than 5 messages reads the delivery log, not
the history cache): a gateway SIGKILLed mid-conversation, a client coming back with
its positions on disk, a client process SIGKILLed and restarted mid-stream, hundreds
of messages to an offline user (also several replay pages while more are sent), an
offline group member, a chat accept published while the requester was away, a Redis
restarted from its AOF; the per-conversation maximum is announced with the exact
number of messages lost, a Redis that lost its data as a lost epoch; acknowledged
messages leave Redis.

Every stack raises only the send rate (SENDS): these tests send far more than the
shipped 3 calls per 30 s per user. Other settings changed by a test say why where
they are set.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from spartan import naming
from spartan.client.headless import HeadlessClient
from spartan.client.state import ClientState
from spartan.delivery_log import conversation_keys
from spartan.v1 import pb
from tests.support.stack import rates

ROOT = Path(__file__).resolve().parents[2]
DM = naming.dm_conversation("alice", "bob")
SENDS = rates(send=1000)  # up to 451 messages sent back to back

# argv: address user key_dir. Prints "ready" once its stream is open, then the text of each chat
# message as it is recorded; its positions live on disk (persist=True), so a new process resumes.
PERSISTENT_READER = """
import asyncio, sys
from spartan.client.headless import HeadlessClient

async def main():
    client = HeadlessClient(sys.argv[2], [sys.argv[1]], sys.argv[3], encrypt=False, persist=True,
                            on_chat=lambda r: print(r.text, flush=True))
    await client.start()
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


# ------------------------------------------------------------------ helpers
def texts(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix} {i:03d}" for i in range(start, start + count)]


def record_arrivals(client: HeadlessClient, arrivals: list[pb.Message]) -> list[pb.Message]:
    """Append every message the client's stream hands over, duplicates included, in arrival order."""
    handle = client.receiver.handle

    async def recording(message: pb.Message) -> None:
        arrivals.append(message)
        await handle(message)

    client.receiver.handle = recording
    return arrivals


@pytest.fixture
async def open_client(tmp_path):  # type: ignore[no-untyped-def]
    """Like `client_factory` (same key folder), optionally recording every stream arrival from the start."""
    made: list[HeadlessClient] = []

    async def make(user: str, addresses: list[str], *, arrivals: list[pb.Message] | None = None,
                   **kwargs: object) -> HeadlessClient:
        client = HeadlessClient(user, addresses, str(tmp_path / "keys"), **kwargs)  # type: ignore[arg-type]
        made.append(client)
        if arrivals is not None:
            record_arrivals(client, arrivals)
        return await client.start()

    yield make
    for client in made:
        await client.close()


def chats(arrivals: list[pb.Message]) -> list[pb.Message]:
    return [m for m in arrivals if m.kind == pb.CHAT]


async def send_all(client: HeadlessClient, peer: str, messages: list[str], pace: float = 0.0,
                   after_each: Callable[[int], None] | None = None) -> None:
    for i, text in enumerate(messages):
        await client.send(peer, text)
        if after_each is not None:
            after_each(i)
        if pace:
            await asyncio.sleep(pace)


async def register(open_client, user: str, addresses: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Log `user` in once (which publishes their keys), then go offline."""
    client = await open_client(user, addresses)
    await client.synced.wait()
    await client.close()


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.1)


def assert_exactly(received: list[str | None], expected: list[str]) -> None:
    assert len(received) == len(set(received)), "a message arrived twice"
    assert received == expected


# -------------------------------------------------------------------- tests
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


def replayed_on_second_stream(arrivals: list[pb.Message], before_kill: int) -> int:
    """Chat messages the second stream replayed (before its SYNCED), after `before_kill` on the first."""
    synced = [i for i, m in enumerate(arrivals) if m.kind == pb.SYNCED]
    assert len(synced) == 2, "expected exactly one reconnect"
    return len(chats(arrivals[:synced[1]])) - before_kill


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


async def test_redis_restarted_from_its_aof_keeps_what_an_offline_user_has_not_had(
        stack_factory, open_client) -> None:
    stack = stack_factory(gateways=2, appendonly=True, settings=SENDS)
    await register(open_client, "bob", [stack.address(2)])
    alice = await open_client("alice", [stack.address(1)])
    expected = texts("kept", 10)
    await send_all(alice, "bob", expected)

    stack.redis.restart()  # SIGTERM, then the same folder and port: the AOF is replayed
    bob = await connect_when_up(open_client, "bob", [stack.address(2), stack.address(1)], timeout=60)
    await bob.wait_for(10, timeout=60)
    await bob.synced.wait()
    assert_exactly(bob.texts(), expected)
    notices = [e for e in bob.events if e.kind == pb.NOTICE and e.conversation]
    assert not notices, f"nothing was lost, yet: {[n.text for n in notices]}"


async def test_redis_that_lost_its_data_is_announced_and_the_new_epoch_delivered(stack_factory, open_client) -> None:
    """Without AOF a restarted Redis is empty: a returning client's cursor names a lost epoch."""
    stack = stack_factory(gateways=2, settings=SENDS)
    # Unencrypted: the key directory lives in the same Redis and is lost with it.
    alice = await open_client("alice", [stack.address(1)], encrypt=False)
    bob = await open_client("bob", [stack.address(2)], encrypt=False, persist=True)
    await send_all(alice, "bob", texts("old", 3))
    await bob.wait_for(3)
    await bob.close()

    stack.redis.kill()
    stack.redis.start()
    await eventually(lambda: _sent(alice, "bob", "new 000"), timeout=30, what="alice can send again")
    await send_all(alice, "bob", texts("new", 2, start=1))
    arrivals: list[pb.Message] = []
    later = await connect_when_up(open_client, "bob", [stack.address(2), stack.address(1)], timeout=60,
                                  arrivals=arrivals, encrypt=False, persist=True)
    await later.wait_for(3, timeout=30)
    lost = [m for m in arrivals if m.kind == pb.NOTICE and m.conversation == DM]
    assert len(lost) == 1 and lost[0].missing == 0, "a lost epoch is announced without a number"
    assert_exactly(later.texts(), texts("new", 3))
    assert [m.offset for m in chats(arrivals)] == [1, 2, 3]  # offsets start again in the new epoch
    assert later.positions[DM] == (lost[0].epoch, 3)


async def test_a_new_epoch_met_live_is_announced_and_read_from_its_start(stack_factory, open_client) -> None:
    """The log starts again while bob's stream stays open (a replica that took over before anything was
    read from it): the first message of the new epoch that reaches bob live makes his stream say that
    earlier messages may be gone and read the new epoch from its start, not take it as the next one."""
    stack = stack_factory(gateways=1)  # the shipped rate: three sends
    alice = await open_client("alice", [stack.address(1)])
    bob = await open_client("bob", [stack.address(1)])
    arrivals = record_arrivals(bob, [])
    await send_all(alice, "bob", ["old 000"])
    await bob.wait_for(1)
    redis = Redis.from_url(stack.redis.url)
    try:
        await redis.delete(*conversation_keys(DM))  # the conversation's log and counter, as a lost write would
    finally:
        await redis.aclose()
    await send_all(alice, "bob", texts("new", 2))
    await bob.wait_for(3)
    lost = [m for m in arrivals if m.kind == pb.NOTICE and m.conversation == DM]
    assert len(lost) == 1 and lost[0].missing == 0, [m.text for m in arrivals]
    assert arrivals.index(lost[0]) < arrivals.index(chats(arrivals)[1])  # said before the new epoch's first
    assert_exactly(bob.texts(), ["old 000", *texts("new", 2)])
    assert bob.positions[DM] == (lost[0].epoch, 2)


async def _sent(client: HeadlessClient, peer: str, text: str) -> bool:
    try:
        await client.send(peer, text)
    except Exception:  # noqa: BLE001 - refused while the services reconnect to Redis
        return False
    return True


async def test_per_conversation_maximum_is_announced_with_the_exact_count(stack_factory, open_client) -> None:
    # A maximum of 10 per conversation (shipped: 10000) reaches the bound with 15 sends.
    stack = stack_factory(gateways=2, settings={**SENDS, "SPARTAN_DELIVERY__MAX_PER_CONVERSATION": "10"})
    await register(open_client, "bob", [stack.address(2)])
    alice = await open_client("alice", [stack.address(1)])
    await send_all(alice, "bob", texts("n", 15, start=1))

    arrivals: list[pb.Message] = []
    bob = await open_client("bob", [stack.address(2)], arrivals=arrivals)
    await bob.wait_for(10, timeout=30)
    await bob.synced.wait()
    about_dm = [m for m in arrivals if m.kind == pb.NOTICE and m.conversation == DM]
    assert len(about_dm) == 1 and about_dm[0].missing == 5, [(m.text, m.missing) for m in about_dm]
    first_chat = next(i for i, m in enumerate(arrivals) if m.kind == pb.CHAT)
    assert arrivals.index(about_dm[0]) < first_chat, "the notice comes before the messages"
    assert_exactly(bob.texts(), texts("n", 10, start=6))


async def test_acknowledged_messages_leave_redis(stack_factory, open_client) -> None:
    stack = stack_factory(gateways=2, settings=SENDS)
    bob = await open_client("bob", [stack.address(2)])
    alice = await open_client("alice", [stack.address(1)])
    await send_all(alice, "bob", texts("acked", 12))
    await bob.wait_for(12, timeout=30)
    meta, log, acks = conversation_keys(DM)
    redis = Redis.from_url(stack.redis.url)
    try:
        await eventually(lambda: _is_empty(redis, log), timeout=10, what=f"{log} is empty")
        assert int(await redis.hget(meta, "last")) == 12  # the meta stays: offsets go on
        assert {k.decode(): int(v) for k, v in (await redis.hgetall(acks)).items()} == {"alice": 12, "bob": 12}
    finally:
        await redis.aclose()


# ------------------------------------------------------- process helpers
def kept_position(key_dir: str, user: str, conversation: str) -> tuple[str, int] | None:
    """The position a (stopped) client process kept on disk for `conversation`."""
    state = ClientState.for_user(user, key_dir)
    try:
        return state.positions.get(conversation)
    finally:
        state.close()


async def _is_empty(redis: Redis, key: str) -> bool:
    return int(await redis.llen(key)) == 0


async def connect_when_up(open_client, user: str, addresses: list[str], timeout: float,
                          **kwargs: object) -> HeadlessClient:  # type: ignore[no-untyped-def]
    """A client, retried while the services are still reconnecting to a restarted Redis."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await open_client(user, addresses, **kwargs)
        except Exception:  # noqa: BLE001 - any refusal while Redis comes back; bounded by the deadline
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def spawn_reader(address: str, user: str, key_dir: str, stderr: Path) -> asyncio.subprocess.Process:
    """Start the reader process; returns once its stream is open. Its stderr goes to `stderr`."""
    with stderr.open("ab") as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PERSISTENT_READER, address, user, key_dir, stdout=asyncio.subprocess.PIPE,
            stderr=errors, env={**os.environ, "PYTHONPATH": str(ROOT)})
    first = await asyncio.wait_for(_line(process), 30)
    if first != "ready":
        process.kill()
        await process.wait()
        raise RuntimeError(f"reader did not start (printed {first!r}): {stderr.read_text()[-2000:]}")
    return process


async def _line(process: asyncio.subprocess.Process) -> str | None:
    assert process.stdout is not None
    raw = await process.stdout.readline()
    return raw.decode().rstrip("\n") if raw else None


async def read_lines(process: asyncio.subprocess.Process, count: int, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        line = await asyncio.wait_for(_line(process), max(0.1, deadline - time.monotonic()))
        assert line is not None, f"reader exited after {lines}"
        lines.append(line)
    return lines


async def read_rest(process: asyncio.subprocess.Process) -> list[str]:
    """What an exited process printed and the test has not read yet."""
    lines = []
    while (line := await asyncio.wait_for(_line(process), 10)) is not None:
        lines.append(line)
    return lines


async def read_until(process: asyncio.subprocess.Process, last: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not lines or lines[-1] != last:
        line = await asyncio.wait_for(_line(process), max(0.1, deadline - time.monotonic()))
        assert line is not None, f"reader exited after {lines}"
        lines.append(line)
    return lines
