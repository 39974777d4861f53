"""Every error a user can meet is one plain sentence with the next step, in a real terminal (tmux).

Server not running, unknown user at start, /accept for someone who never asked, /users
during an outage, and the only server stopping and coming back (said once, no noisy
retries, the typed line waits and goes out when it is back).
"""
from __future__ import annotations

import os
import time

from tests.support.cli import LocalServer, Pane, register, wait_until
from tests.support.ports import free_port

USERS = "alice, bob, charlie, eve, foo, bar, baz, qux"  # config.yaml's users


def screen(pane: Pane) -> list[str]:
    """The pane's lines with lines the terminal wrapped joined again (-J)."""
    shown = pane.tmux("capture-pane", "-p", "-J", "-t", pane.name)
    return [line.rstrip() for line in shown.splitlines()]


def spartan_lines(pane: Pane) -> list[str]:
    return [line for line in screen(pane) if line.startswith("[Spartan]")]


def shows(pane: Pane, text: str) -> bool:
    return any(text in line for line in screen(pane))


def test_server_not_running_says_how_to_start_it(server: LocalServer) -> None:
    port = free_port()
    pane = Pane(f"down{os.getpid()}", server.client("alice"), server.workdir, {**server.env, "SPARTAN_PORT": str(port)})
    try:
        wait_until(lambda: pane.shows("[exited "))
        assert spartan_lines(pane) == [
            f"[Spartan] No Spartan server answers at localhost:{port}: start it with `python3 server.py`, "
            "then run client.py again."]
        assert pane.shows("[exited 1]")
    finally:
        pane.close()


def test_unknown_user_at_start_lists_the_valid_users(server: LocalServer) -> None:
    pane = Pane(f"mallory{os.getpid()}", server.client("mallory"), server.workdir, server.env)
    try:
        wait_until(lambda: pane.shows("[exited "))
        assert spartan_lines(pane) == [
            f"[Spartan] Could not log in as mallory: unknown user 'mallory'. The users in config.yaml are: {USERS}."]
        assert pane.shows("[exited 1]")
        assert not (server.workdir / "keys" / "mallory.json").exists(), "no key is left for a name nobody knows"
    finally:
        pane.close()


def test_accept_for_someone_who_never_asked(server: LocalServer) -> None:
    pane = Pane(f"accept{os.getpid()}", server.client("alice"), server.workdir, server.env)
    try:
        wait_until(lambda: pane.shows("Enter a user whom you want to chat with:"))
        pane.type("bob")
        wait_until(lambda: pane.shows("[alice] >"))
        pane.type("/accept zed")
        wait_until(lambda: shows(pane, "[Spartan] zed has not asked to chat with you (nobody is waiting for an answer)."))
        pane.type("/accept eve")
        wait_until(lambda: shows(pane, "[Spartan] eve has not asked to chat with you (nobody is waiting for an answer); "
                                      "to start a chat with eve, type /switch eve."))
    finally:
        pane.close()


def test_the_only_server_stopping_is_said_once_and_users_and_sends_wait_for_it(server: LocalServer) -> None:
    register(server, "bob")  # so the line typed during the outage has bob's key to go to
    alice = Pane(f"outage{os.getpid()}", server.client("alice"), server.workdir, server.env)
    try:
        wait_until(lambda: alice.shows("Enter a user whom you want to chat with:"))
        alice.type("bob")
        wait_until(lambda: alice.shows("[alice] >"))
        server.stop()
        lost = "[Spartan] Lost the connection to the server; waiting for it to come back"
        wait_until(lambda: alice.shows(lost), timeout=30)
        alice.type("/users")
        wait_until(lambda: shows(alice,
            "[Spartan] Cannot list users: the server is not reachable right now; try /users again in a moment."),
            timeout=60)
        alice.type("typed while the server is away")
        wait_until(lambda: shows(alice, "1 message(s) waiting for the server; they go out when it is back."), timeout=60)
        before = spartan_lines(alice)
        time.sleep(10)  # the client keeps trying quietly: no new lines while it waits
        assert spartan_lines(alice) == before
        assert sum(line.startswith(lost) for line in screen(alice)) == 1
        server.start()
        wait_until(lambda: alice.shows("[Spartan] Connected again."), timeout=60)
        wait_until(lambda: alice.shows("[Spartan] Sent the 1 message that waited for the server."), timeout=60)
        assert not any("Traceback" in line or "StatusCode" in line for line in alice.lines())
    finally:
        alice.close()
