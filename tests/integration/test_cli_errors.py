"""The CLI answers bad input and limits with one plain line and loses nothing the user typed."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from spartan.crypto.sender_keys import max_plaintext_bytes
from tests.support.cli import LocalServer, read_until, register, write


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    local = LocalServer(tmp_path, extra_env={"SPARTAN_RATE__RATE": "2", "SPARTAN_RATE__PER_SECONDS": "2",
                                             "SPARTAN_RATE__BURST": "2"})
    try:
        yield local
    finally:
        local.stop()


def test_bad_choices_and_rate_limit_are_explained(server: LocalServer) -> None:
    register(server, "bob")
    alice = server.piped("alice")
    assert alice.stdin and alice.stdout
    lines: list[str] = []

    def say(text: str, expect: str) -> None:
        write(alice, text)
        read_until(alice, lines, expect)

    read_until(alice, lines, "User list")
    say("zed", "Unknown user 'zed'. Pick one of: bob,charlie,eve,foo,bar,baz,qux")
    say("alice", "You cannot chat with yourself.")
    say("bob", "You are now ready to chat with bob.")
    say("one", "[alice] > one")
    say("two", "[alice] > two")
    say("/history", "[alice] two")
    assert lines[-3:] == ["[Spartan] Recent messages with bob:", "[alice] one", "[alice] two"]
    # Over the limit lines wait in the queue (a status line on stderr when piped) and go by themselves, in order.
    for text in ("three", "four", "five", "six"):
        write(alice, text)
    read_until(alice, lines, "that waited for the rate limit.")
    assert lines[-1].startswith("[Spartan] Sent the ")
    say("/history", "[alice] six")
    assert lines[-5:] == [f"[alice] {text}" for text in ("two", "three", "four", "five", "six")]
    say("/retry", "Nothing to retry.")
    # config.yaml allows 65,536-byte bodies; the longest text whose padded, signed envelope fits is shorter.
    say("x" * 70000, f"Not sent: message is larger than the maximum of {max_plaintext_bytes(65536)} bytes.")
    say("/nope", "Unknown command /nope. Type /help for the list.")
    alice.stdin.close()
    assert alice.wait(timeout=30) == 0
    assert not any("Traceback" in line for line in lines)


def test_bad_user_names_get_one_line_and_no_traceback(server: LocalServer) -> None:
    for user, code, line in (("zed", 1, "[Spartan] Could not log in as zed: unknown user 'zed'"),
                             ("Alice", 2, "[Spartan] user name Alice is not valid")):
        done = subprocess.run(server.client(user), input="", capture_output=True, text=True, cwd=server.workdir,
                              env=server.env, timeout=60)
        assert done.returncode == code
        assert done.stderr.strip().startswith(line) and len(done.stderr.strip().splitlines()) == 1
