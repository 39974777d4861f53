"""`client.py alice` with a key protected by a passphrase: the terminal asks without echo, scripts pass it.

A protected key without its passphrase, or with a wrong one, ends the client with one
sentence and exit status 2 before anything is changed or sent; `--set-passphrase` adds,
changes and removes it; a script passes it with SPARTAN_PASSPHRASE or --passphrase-file.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from spartan.crypto.keystore import is_protected, key_path
from tests.support.cli import ROOT, LocalServer, Pane, wait_until

PASSPHRASE = "tr0ub4dor&3 horse"


def client(env: dict[str, str], cwd: Path, *args: str, stdin: str = "/quit\n") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "client.py"), "alice", *args], input=stdin,
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No server needed: every case below ends before the client connects."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPARTAN_")}
    return {**base, "PYTHONPATH": str(ROOT), "SPARTAN_KEY_DIR": str(tmp_path / "keys"), **extra}


def test_set_passphrase_then_missing_or_wrong_passphrase_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    path = key_path("alice", tmp_path / "keys")
    done = client(offline_env(tmp_path, SPARTAN_NEW_PASSPHRASE=PASSPHRASE), tmp_path, "--set-passphrase")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"[Spartan] The key file of alice ({path}) is now protected by the new passphrase.\n"
    assert is_protected("alice", tmp_path / "keys")
    before = path.read_bytes()

    missing = client(offline_env(tmp_path), tmp_path)  # a script (stdin piped) that passes nothing
    assert missing.returncode == 2
    assert missing.stderr == (f"[Spartan] The key file of alice ({path}) is protected by a passphrase; type it at "
                              "a terminal, or pass it with SPARTAN_PASSPHRASE or --passphrase-file FILE.\n")
    wrong = client(offline_env(tmp_path, SPARTAN_PASSPHRASE="not it"), tmp_path)
    assert wrong.returncode == 2
    assert wrong.stderr == f"[Spartan] Wrong passphrase for the key file of alice ({path}); nothing was changed.\n"
    (tmp_path / "wrong.txt").write_text("also not it\n")
    wrong_file = client(offline_env(tmp_path), tmp_path, "--passphrase-file", str(tmp_path / "wrong.txt"))
    assert (wrong_file.returncode, wrong_file.stderr) == (2, wrong.stderr)
    changing = client(offline_env(tmp_path, SPARTAN_PASSPHRASE="not it", SPARTAN_NEW_PASSPHRASE="x"), tmp_path,
                      "--set-passphrase")
    assert (changing.returncode, changing.stderr) == (2, wrong.stderr)
    assert path.read_bytes() == before  # nothing was overwritten
    assert missing.stdout == wrong.stdout == changing.stdout == ""


def test_scripts_pass_the_passphrase_by_variable_or_file_and_can_remove_it(server: LocalServer,
                                                                          tmp_path: Path) -> None:
    env = {**server.env, "SPARTAN_NEW_PASSPHRASE": PASSPHRASE}
    assert client(env, server.workdir, "--set-passphrase").returncode == 0  # a new key, protected at once
    by_variable = client({**server.env, "SPARTAN_PASSPHRASE": PASSPHRASE}, server.workdir)
    assert by_variable.returncode == 0, by_variable.stderr
    assert f"[Spartan] Connected to Spartan Server at port {server.port}." in by_variable.stdout
    secret = tmp_path / "passphrase.txt"
    secret.write_text(PASSPHRASE + "\n")
    by_file = client(server.env, server.workdir, "--passphrase-file", str(secret))
    assert by_file.returncode == 0, by_file.stderr
    assert "[Spartan] User list: bob,charlie,eve,foo,bar,baz,qux" in by_file.stdout
    removed = client({**server.env, "SPARTAN_PASSPHRASE": PASSPHRASE, "SPARTAN_NEW_PASSPHRASE": ""},
                     server.workdir, "--set-passphrase")
    assert removed.returncode == 0 and "is no longer protected by a passphrase." in removed.stdout
    plain = client(server.env, server.workdir)  # as before any passphrase: nothing asked, same key logs in
    assert plain.returncode == 0, plain.stderr
    assert "Connected to Spartan Server" in plain.stdout


def test_a_terminal_asks_for_the_passphrase_without_echo(server: LocalServer) -> None:
    env = {**server.env, "SPARTAN_NEW_PASSPHRASE": PASSPHRASE}
    assert client(env, server.workdir, "--set-passphrase").returncode == 0
    pane = Pane(f"passphrase{os.getpid()}", server.client("alice"), server.workdir, server.env)
    try:
        wait_until(lambda: pane.shows("Passphrase for alice's key:"))
        pane.type(PASSPHRASE)
        wait_until(lambda: pane.shows("Enter a user whom you want to chat with:"))
        assert pane.lines()[0] == "Passphrase for alice's key:"
        assert not any(PASSPHRASE in line for line in pane.lines())
    finally:
        pane.close()
    wrong = Pane(f"wrongpass{os.getpid()}", server.client("alice"), server.workdir, server.env)
    try:
        wait_until(lambda: wrong.shows("Passphrase for alice's key:"))
        wrong.type("guess")
        wait_until(lambda: wrong.shows("[exited 2]"))
        path = key_path("alice", Path(server.env["SPARTAN_KEY_DIR"]))
        lines = wrong.lines()
        assert lines[-1] == "[exited 2]"
        assert "".join(lines[1:-1]) == (  # one sentence, wrapped at the pane's 120 columns
            f"[Spartan] Wrong passphrase for the key file of alice ({path}); nothing was changed.")
    finally:
        wrong.close()


def test_set_passphrase_at_a_terminal_asks_twice_and_refuses_two_that_differ(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    path = key_path("alice", tmp_path / "keys")
    command = [sys.executable, str(ROOT / "client.py"), "alice", "--set-passphrase"]
    for attempt, (first, second, status) in enumerate((("first-try", "second-try", 2), (PASSPHRASE, PASSPHRASE, 0))):
        pane = Pane(f"setpass{attempt}{os.getpid()}", command, tmp_path, env)
        try:
            wait_until(lambda: pane.shows("New passphrase for alice's key (empty: none):"))
            pane.type(first)
            wait_until(lambda: pane.shows("The same again:"))
            pane.type(second)
            wait_until(lambda: pane.shows(f"[exited {status}]"))
            # A line longer than the pane wraps, and the wrap may fall on a space that capture drops:
            # compare without whitespace.
            screen = "".join("".join(pane.lines()).split())
            assert first not in screen and second not in screen  # never echoed
            if status == 2:
                assert "".join("[Spartan] The two passphrases differ; nothing was changed.".split()) in screen
                assert not is_protected("alice", tmp_path / "keys")
            else:
                said = f"[Spartan] The key file of alice ({path}) is now protected by the new passphrase."
                assert "".join(said.split()) in screen
                assert is_protected("alice", tmp_path / "keys")
        finally:
            pane.close()
