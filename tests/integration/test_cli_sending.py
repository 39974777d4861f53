"""Sending in a real terminal under the shipped rate limit (3 sends per 30 s): nothing dropped, nothing garbled.

Both users run the real CLI in tmux panes (prompt_toolkit draws the input line and the
status toolbar). Lines typed faster than the limit wait in the client's queue and
leave in order; one status line counts them down; the screen keeps every typed line
intact. A multi-line paste (bracketed, as terminals paste) is one message per line.
"""
from __future__ import annotations

import os
import re

from tests.support.cli import LocalServer, Pane, wait_until

LINES = 8  # 3 go at once, 5 wait: enough to see the queue hold, count down and drain in order
BURST = 3  # the shipped limit lets 3 sends through, then one every 10 s: 5 x 10 s = 50 s for the rest
ROWS = 50  # every line of the test stays on screen
# The bound below is generous (a loaded machine), not a claim about speed.
ALL_SENT_SECONDS = 200.0


def chat_between(server: LocalServer, suffix: str) -> tuple[Pane, Pane]:
    """alice and bob in a 1:1 chat, each in a pane (tall enough to keep every line on screen)."""
    alice = Pane(f"alice{suffix}", server.client("alice"), server.workdir, server.env)
    alice.tmux("resize-window", "-t", alice.name, "-y", str(ROWS))
    wait_until(lambda: alice.shows("Enter a user whom you want to chat with:"))
    alice.type("bob")
    wait_until(lambda: alice.shows("You are now ready to chat with bob."))
    bob = Pane(f"bob{suffix}", server.client("bob"), server.workdir, server.env)
    bob.tmux("resize-window", "-t", bob.name, "-y", str(ROWS))
    wait_until(lambda: bob.shows("Enter 'yes' to accept"))
    bob.type("yes")
    wait_until(lambda: bob.shows("You are now ready to chat with alice."))
    return alice, bob


def chat_lines(pane: Pane, sender: str) -> list[str]:
    return [line for line in pane.lines() if line.startswith(f"[{sender}] ") and not line.startswith(f"[{sender}] >")]


def test_lines_typed_faster_than_the_limit_all_arrive_in_order_and_the_screen_stays_clean(server: LocalServer) -> None:
    alice, bob = chat_between(server, str(os.getpid()))
    typed = [f"quick line {i}" for i in range(1, LINES + 1)]
    try:
        for text in typed:
            alice.type(text)
        # One status line counts down while the limit holds (the toolbar, not a chat line).
        wait_until(lambda: any(re.search(r"message\(s\) waiting for the rate limit: next in \d+s\.", line)
                               for line in alice.lines()))
        status = [line for line in alice.lines() if "waiting for the rate limit" in line]
        assert len(status) == 1, status
        wait_until(lambda: bob.shows(f"[alice] {typed[-1]}"), timeout=ALL_SENT_SECONDS)
        assert chat_lines(bob, "alice") == [f"[alice] {text}" for text in typed]
        summary = f"[Spartan] Sent the {LINES - BURST} messages that waited for the rate limit."
        wait_until(lambda: alice.shows(summary))
        screen = alice.lines()
        assert "[Spartan] You are now ready to chat with bob." in screen, screen
        start = screen.index("[Spartan] You are now ready to chat with bob.") + 1
        # Every typed line is on the screen once, whole, after its prompt and in order; nothing else
        # but the one summary and the empty prompt (no status lines left behind, no garbling).
        assert screen[start:] == [*(f"[alice] > {text}" for text in typed),
                                  summary, "[alice] >"], screen
        assert not any("Slow down" in line or "Traceback" in line for line in screen)
    finally:
        alice.close()
        bob.close()


def test_a_multi_line_paste_is_one_message_per_line_in_order(server: LocalServer) -> None:
    alice, bob = chat_between(server, f"p{os.getpid()}")
    pasted = ["first pasted line", "second pasted line", "third pasted line"]
    try:
        alice.tmux("set-buffer", "-b", alice.name, "\n".join(pasted))
        # -p: bracketed paste, as a terminal pastes when the program asks for it (prompt_toolkit does).
        alice.tmux("paste-buffer", "-p", "-d", "-b", alice.name, "-t", alice.name)
        alice.tmux("send-keys", "-t", alice.name, "Enter")
        wait_until(lambda: bob.shows(f"[alice] {pasted[-1]}"))
        assert chat_lines(bob, "alice") == [f"[alice] {text}" for text in pasted]
        screen = alice.lines()
        # It arrived as one paste (one input of three lines, not three Enter presses) and was split.
        start = screen.index(f"[alice] > {pasted[0]}")
        assert screen[start + 1:start + 3] == pasted[1:], screen
        assert not any("control characters" in line for line in screen)
    finally:
        alice.close()
        bob.close()


def test_quitting_with_queued_lines_says_how_many_and_the_next_start_sends_them(server: LocalServer) -> None:
    suffix = f"q{os.getpid()}"
    alice, bob = chat_between(server, suffix)
    typed = [f"before quitting {i}" for i in range(1, 6)]
    try:
        for text in typed:
            alice.type(text)
        wait_until(lambda: alice.shows("waiting for the rate limit"))
        alice.tmux("send-keys", "-t", alice.name, "C-d")
        wait_until(lambda: alice.shows("[exited 0]"))
        unsent = next(line for line in alice.lines() if "not sent yet" in line)
        count = int(unsent.split()[1])
        assert unsent == (f"[Spartan] {count} messages were not sent yet; kept, they go out the next time you start "
                          "client.py alice."), unsent
        # What the server acknowledged before the quit reaches bob (delivery may lag the acknowledgement).
        acknowledged = [f"[alice] {text}" for text in typed[:len(typed) - count]]
        wait_until(lambda: len(chat_lines(bob, "alice")) >= len(acknowledged))
        assert chat_lines(bob, "alice") == acknowledged
        alice.close()
        alice = Pane(f"alice{suffix}", server.client("alice"), server.workdir, server.env)
        wait_until(lambda: bob.shows(f"[alice] {typed[-1]}"), timeout=120)  # 10 s per line under the limit
        assert chat_lines(bob, "alice") == [f"[alice] {text}" for text in typed]
    finally:
        alice.close()
        bob.close()
