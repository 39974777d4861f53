"""A contact's key as the real CLI shows it: the same safety number on both sides, and a key reset
announced with its new number and not used until the user accepts it.

Real processes: presence, history and two gateways against a private redis-server; the CLI with
stdin and stdout piped, next to headless clients.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spartan.client.headless import HeadlessClient
from tests.support.piped_cli import PipedCli, copy_identity


async def test_key_reset_shows_the_key_change_warning(stack_factory, client_factory, keys: Path) -> None:  # type: ignore[no-untyped-def]
    """After a reset the new key is announced with its safety number and not used (nor its messages
    shown as bob's) until the user accepts it."""
    stack = stack_factory(gateways=2)
    bob = await client_factory("bob", [stack.address(2)])
    alice = await client_factory("alice", [stack.address(1)])
    await alice.send("bob", "before the reset")
    await bob.wait_for(1)
    cli_dir = keys.parent / "alice-cli"
    copy_identity("alice", keys, cli_dir)
    cli = PipedCli("alice", stack, cli_dir, 1)
    try:
        cli.open_chat("bob")
        cli.type("pinning bob's first key")
        await bob.wait_for(2)
        await bob.close()

        reset = subprocess.run([sys.executable, "-m", "spartan.admin", "reset-keys", "bob"], capture_output=True,
                               text=True, env=stack.env, timeout=60)
        assert reset.returncode == 0, reset.stderr
        new_bob = HeadlessClient("bob", [stack.address(2)], str(keys.parent / "bob-new-device"))
        new_bob.conn.enrolment_code = reset.stdout.split("--enrolment-code ")[1].strip()  # printed by the reset
        await new_bob.start()
        try:
            await new_bob.send("alice", "hello from my new device")
            await alice.wait_for(1)
            assert alice.texts() == [None]  # not shown as bob's: the new key is not accepted
            assert any(n.startswith("WARNING: bob's security key has changed!") for n in alice.notices)
            shown = cli.read_until("which you have not accepted, is not shown as from bob")
            assert any(line.startswith("[Spartan] WARNING: bob's security key has changed!") for line in shown)
            warning = next(line for line in shown if "WARNING" in line)
            assert "/verify bob" in warning and "/accept-key bob" in warning
            assert not any("hello from my new device" in line for line in cli.lines)
        finally:
            await new_bob.close()
    finally:
        assert cli.quit() == 0


async def test_both_sides_see_the_same_safety_number(stack_factory, keys: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=2)
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    bob = PipedCli("bob", stack, keys, 2)
    alice: PipedCli | None = None
    try:
        bob.read_until("User list")  # bob's keys are registered
        alice = PipedCli("alice", stack, keys, 1)
        alice.read_until("User list")
        alice.type("/verify bob")
        bob.type("/verify alice")
        numbers = []
        for cli, peer in ((alice, "bob"), (bob, "alice")):
            cli.read_until(f"Safety number with {peer} (not verified yet)")
            rows = [cli.read_until("[Spartan]     ")[-1] for _ in range(3)]
            numbers.append([row.removeprefix("[Spartan]").strip() for row in rows])
        assert numbers[0] == numbers[1]
        digits = "".join(numbers[0]).replace(" ", "")
        assert len(digits) == 60 and digits.isdigit()
    finally:
        assert bob.quit() == 0
        if alice:
            assert alice.quit() == 0
