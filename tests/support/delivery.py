"""What the delivery-log integration tests share: sending and recording messages, a client fixture that
closes what it opened, and a reader process that keeps its positions on disk."""
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


def replayed_on_second_stream(arrivals: list[pb.Message], before_kill: int) -> int:
    """Chat messages the second stream replayed (before its SYNCED), after `before_kill` on the first."""
    synced = [i for i, m in enumerate(arrivals) if m.kind == pb.SYNCED]
    assert len(synced) == 2, "expected exactly one reconnect"
    return len(chats(arrivals[:synced[1]])) - before_kill


def kept_position(key_dir: str, user: str, conversation: str) -> tuple[str, int] | None:
    """The position a (stopped) client process kept on disk for `conversation`."""
    state = ClientState.for_user(user, key_dir)
    try:
        return state.positions.get(conversation)
    finally:
        state.close()


async def is_empty(redis: Redis, key: str) -> bool:
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
