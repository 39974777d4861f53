"""The seed transcript, line for line: `python3 server.py`, then two real CLI clients.

Once in real terminals (tmux panes, so prompt_toolkit draws the input line and
incoming messages are printed above it) and once with stdin piped (scripted use:
no escape codes, answers echoed after their prompts).
"""
from __future__ import annotations

import os

import pytest

from tests.support.cli import LocalServer, Pane, read_until, register, wait_until, write


def seed_lines(port: int) -> tuple[list[str], list[str]]:
    alice = [
        f"[Spartan] Connected to Spartan Server at port {port}.",
        "[Spartan] User list: bob,charlie,eve,foo,bar,baz,qux",
        "[Spartan] Enter a user whom you want to chat with: bob",
        "[Spartan] You are now ready to chat with bob.",
        "[alice] > Hey Bob!",
        "[bob] Hi Alice!",
    ]
    bob = [
        f"[Spartan] Connected to Spartan Server at port {port}.",
        "[Spartan] User list: alice,charlie,eve,foo,bar,baz,qux",
        "[Spartan] alice is requesting to chat with you. Enter 'yes' to accept or different user: yes",
        "[Spartan] You are now ready to chat with alice.",
        "[alice] Hey Bob!",
        "[bob] > Hi Alice!",
    ]
    return alice, bob


def test_server_prints_the_seed_line(server: LocalServer) -> None:
    assert server.first_line == f"Spartan server started on port {server.port}."


# Fresh: bob has never logged in when alice types, so "Hey Bob!" waits in alice's client for his
# key (a status line, not a chat line) and goes out when he first logs in; the transcript is the same.
FRESH_AND_REGISTERED = pytest.mark.parametrize("bob_registered", [False, True], ids=["fresh", "bob-registered"])


@FRESH_AND_REGISTERED
def test_seed_transcript_in_real_terminals(server: LocalServer, bob_registered: bool) -> None:
    if bob_registered:
        register(server, "bob")
    expected_alice, expected_bob = seed_lines(server.port)
    suffix = str(os.getpid())
    alice = Pane(f"alice{suffix}", server.client("alice"), server.workdir, server.env)
    bob: Pane | None = None
    try:
        wait_until(lambda: alice.shows("Enter a user whom you want to chat with:"))
        alice.type("bob")
        wait_until(lambda: alice.shows("[alice] >"))
        alice.type("Hey Bob!")
        if bob_registered:
            wait_until(lambda: alice.lines()[-1:] == ["[alice] >"] and len(alice.lines()) >= 6)
        else:  # the message waits for bob's key: a status line at the bottom, no chat line
            wait_until(lambda: alice.shows("1 message(s) for bob will be sent once they log in for the first time.")
                       and "[alice] >" in alice.lines())
        bob = Pane(f"bob{suffix}", server.client("bob"), server.workdir, server.env)
        wait_until(lambda: bob.shows("Enter 'yes' to accept"))
        bob.type("yes")
        wait_until(lambda: bob.shows("[alice] Hey Bob!"))
        bob.type("Hi Alice!")
        wait_until(lambda: alice.shows("[bob] Hi Alice!"))
        wait_until(lambda: bob.lines()[-1:] == ["[bob] >"] and alice.lines()[-1:] == ["[alice] >"])
        assert alice.lines() == [*expected_alice, "[alice] >"]
        assert bob.lines() == [*expected_bob, "[bob] >"]
    finally:
        alice.close()
        if bob:
            bob.close()


@FRESH_AND_REGISTERED
def test_seed_transcript_with_stdin_piped(server: LocalServer, bob_registered: bool) -> None:
    if bob_registered:
        register(server, "bob")
    expected_alice, expected_bob = seed_lines(server.port)
    alice = server.piped("alice")
    out: dict[str, list[str]] = {"alice": [], "bob": []}
    read_until(alice, out["alice"], "Connected to Spartan Server")
    read_until(alice, out["alice"], "User list")
    write(alice, "bob")
    read_until(alice, out["alice"], "You are now ready to chat with bob.")
    write(alice, "Hey Bob!")
    read_until(alice, out["alice"], "[alice] > Hey Bob!")
    bob = server.piped("bob")
    read_until(bob, out["bob"], "User list")
    write(bob, "yes")
    read_until(bob, out["bob"], "[alice] Hey Bob!")
    write(bob, "Hi Alice!")
    assert bob.stdin is not None and alice.stdin is not None and bob.stdout is not None
    bob.stdin.close()
    read_until(alice, out["alice"], "[bob] Hi Alice!")
    alice.stdin.close()
    assert alice.wait(timeout=30) == 0 and bob.wait(timeout=30) == 0
    out["bob"] += [line.rstrip("\n") for line in bob.stdout]
    assert out["alice"] == expected_alice
    assert out["bob"] == expected_bob
    assert not any("\x1b" in line for line in out["alice"] + out["bob"])




@pytest.mark.parametrize("keys", ["C-c", "C-d"])
def test_ctrl_c_and_ctrl_d_leave_cleanly(server: LocalServer, keys: str) -> None:
    pane = Pane(f"quit{keys[-1]}{os.getpid()}", server.client("charlie"), server.workdir, server.env)
    try:
        wait_until(lambda: pane.shows("Enter a user whom you want to chat with:"))
        pane.type("bob")
        wait_until(lambda: pane.shows("[charlie] >"))
        pane.tmux("send-keys", "-t", pane.name, keys)
        wait_until(lambda: pane.shows("[exited "))
        screen = "\n".join(pane.lines())
        assert "[exited 0]" in screen
        assert "Traceback" not in screen and "Error" not in screen
    finally:
        pane.close()

