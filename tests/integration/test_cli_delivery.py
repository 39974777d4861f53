"""What a person sees of the delivery guarantee, through the real CLI (`python3 server.py`,
piped `client.py`): coming back after being away, a loss that is announced, and a message
typed before the peer ever logged in that survives quitting.

The shipped config.yaml is used; where a test sends more than 3 messages in 30 s it raises
only the send rate (SPARTAN_RATE__APIS), and the loss test lowers only the per-conversation
maximum so that five sends reach it.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from spartan.client.headless import HeadlessClient
from spartan.delivery_log import conversation_keys as delivery_keys
from spartan.naming import dm_conversation, user_channel
from tests.support.cli import LocalServer, read_until, register, write

FAST_SENDS = {"SPARTAN_RATE__APIS": "{send: {rate: 100, per_seconds: 1}}"}  # the tests send 5-8 at once


@pytest.fixture
def fast_server(tmp_path: Path) -> Iterator[LocalServer]:
    local = LocalServer(tmp_path, FAST_SENDS)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def small_log_server(tmp_path: Path) -> Iterator[LocalServer]:
    local = LocalServer(tmp_path, {**FAST_SENDS, "SPARTAN_DELIVERY__MAX_PER_CONVERSATION": "3"})
    try:
        yield local
    finally:
        local.stop()


async def send_as_alice(server: LocalServer, texts: list[str]) -> None:
    """alice sends from a headless client with her registered key (a script, not a terminal)."""
    alice = HeadlessClient("alice", [f"127.0.0.1:{server.port}"], str(server.workdir / "keys"))
    await alice.start()
    try:
        for text in texts:
            await alice.send("bob", text)
    finally:
        await alice.close()


def say_once(server: LocalServer, user: str, peer: str, text: str) -> list[str]:
    """`user` starts the client, picks `peer`, sends `text` and leaves; returns what it printed."""
    client = server.piped(user)
    lines: list[str] = []
    read_until(client, lines, "User list")
    write(client, peer)
    read_until(client, lines, f"You are now ready to chat with {peer}.")
    write(client, text)
    read_until(client, lines, f"[{user}] > {text}")
    return finish(client, lines)


def come_back_and_read(server: LocalServer, summary: str, last: str) -> list[str]:
    """bob starts, waits for the while-away `summary`, picks alice, reads up to `last`, leaves."""
    bob = server.piped("bob")
    lines: list[str] = []
    read_until(bob, lines, summary)
    write(bob, "alice")
    read_until(bob, lines, last)
    return finish(bob, lines)


def finish(process: subprocess.Popen[str], lines: list[str]) -> list[str]:
    """Close stdin (the user leaves), wait for the client to exit, return everything it printed."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    assert process.wait(timeout=30) == 0
    return lines + [line.rstrip("\n") for line in process.stdout]


async def test_coming_back_says_who_wrote_and_shows_every_message_once_in_order(fast_server: LocalServer) -> None:
    server = fast_server
    register(server, "alice")
    say_once(server, "bob", "alice", "see you later")

    away = [f"while you were away {i}" for i in range(1, 9)]
    await send_as_alice(server, away)

    lines = come_back_and_read(server, "alice sent you 8 messages while you were away.", "[alice] while you were away 8")
    assert lines[:3] == [
        f"[Spartan] Connected to Spartan Server at port {server.port}.",
        "[Spartan] User list: alice,charlie,eve,foo,bar,baz,qux",
        "[Spartan] alice sent you 8 messages while you were away.",
    ]
    assert [line for line in lines if line.startswith("[alice]")] == [f"[alice] {text}" for text in away]


async def test_messages_beyond_the_maximum_are_announced_with_their_number(small_log_server: LocalServer) -> None:
    server = small_log_server
    register(server, "bob")
    await send_as_alice(server, [f"message {i}" for i in range(1, 6)])
    lines = come_back_and_read(server, "alice sent you 3 messages while you were away.", "[alice] message 5")
    assert "[Spartan] 2 earlier messages with alice could not be kept for you and are lost (too old or too many)." \
        in lines
    assert [line for line in lines if line.startswith("[alice]")] == [f"[alice] message {i}" for i in (3, 4, 5)]


def test_a_message_waiting_for_the_peers_key_survives_quitting(fast_server: LocalServer) -> None:
    server = fast_server
    lines = say_once(server, "alice", "bob", "Hey Bob!")
    assert not any("log in" in line for line in lines), "the waiting message is a status, not a chat line"
    state = server.workdir / "keys" / "alice.state"
    assert any(json.loads(line).get("t") == "Hey Bob!" for line in state.read_text().splitlines())

    register(server, "bob")  # bob logs in for the first time while alice is not running
    alice = server.piped("alice")  # alice comes back: her client sends what waited, before any prompt
    restarted: list[str] = []
    read_until(alice, restarted, "User list")
    finish(alice, restarted)

    bob = server.piped("bob")
    seen: list[str] = []
    read_until(bob, seen, "User list")
    write(bob, "yes")
    read_until(bob, seen, "[alice] Hey Bob!")
    seen = finish(bob, seen)
    assert seen.count("[alice] Hey Bob!") == 1
    outbox: dict[str, str] = {}
    for line in state.read_text().splitlines():
        entry = json.loads(line)
        if "q" in entry:
            outbox[entry["q"]] = entry["t"]
        elif "sent" in entry:
            outbox.pop(entry["sent"], None)
    assert outbox == {}, "nothing is left waiting once it was sent"


async def test_a_message_published_twice_is_shown_once(fast_server: LocalServer) -> None:
    """The same stored message published twice on bob's channel (as a replay overlapping a live copy) while
    bob reads another chat: when he switches to alice, it is there once."""
    server = fast_server
    register(server, "alice")
    bob = server.piped("bob")
    lines: list[str] = []
    read_until(bob, lines, "User list")
    write(bob, "charlie")
    read_until(bob, lines, "You are now ready to chat with charlie.")
    await send_as_alice(server, ["only once"])
    read_until(bob, lines, "New message from alice.")
    redis = Redis(unix_socket_path=str(server.workdir / ".spartan" / "redis" / "redis.sock"))
    try:
        stored = (await redis.lrange(delivery_keys(dm_conversation("alice", "bob"))[1], 0, -1))[-1]
        await redis.spublish(user_channel("bob"), stored)
    finally:
        await redis.aclose()
    await send_as_alice(server, ["and then this"])
    write(bob, "/switch alice")
    read_until(bob, lines, "[alice] and then this")
    lines = finish(bob, lines)
    assert [line for line in lines if line.startswith("[alice]")] == ["[alice] only once", "[alice] and then this"]


async def test_after_the_server_restarts_the_replay_and_new_messages_are_each_shown_once(
        fast_server: LocalServer) -> None:
    """bob's piped client reads alice's messages, the only server stops and starts again (same folder, its Redis
    AOF kept), bob's client reconnects and catches up after what it showed: nothing is shown twice, and what
    alice sends while bob is reconnecting and after is shown once, in order."""
    server = fast_server
    register(server, "alice")
    bob = server.piped("bob")
    lines: list[str] = []
    read_until(bob, lines, "User list")
    write(bob, "alice")
    read_until(bob, lines, "You are now ready to chat with alice.")
    await send_as_alice(server, ["before 1", "before 2"])
    read_until(bob, lines, "[alice] before 2")
    server.stop()
    server.start()
    await send_as_alice(server, ["after 1"])  # may reach bob live or by the catch-up, or both
    read_until(bob, lines, "[alice] after 1")
    await send_as_alice(server, ["after 2"])
    read_until(bob, lines, "[alice] after 2")
    lines = finish(bob, lines)
    assert [line for line in lines if line.startswith("[alice]")] == [
        "[alice] before 1", "[alice] before 2", "[alice] after 1", "[alice] after 2"]
