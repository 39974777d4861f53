"""What the services write to their logs, read from real processes after a real conversation.

With `log.format: json` every line of every service is one JSON object with `ts`,
`level`, `logger` and `msg`, ready for a log shipper; with the default text format
the lines are for people. In neither format does a message's plaintext, the token
secret, a session token or any private key material appear.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from spartan.v1 import pb
from spartan.errors import SpartanError

PLAINTEXT = "zebra-quokka-7731 meet me at the old lighthouse"
TEXT_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+: .+")


async def converse_and_stop(stack, client_factory) -> list[str]:  # type: ignore[no-untyped-def]
    """A conversation (and one refused call) through two gateways, then a graceful stop of every service.

    Returns what must never be logged: the plaintext, the token secret and the
    clients' session tokens (private keys come from `key_material`).
    """
    alice = await client_factory("alice", [stack.address(1)])
    bob = await client_factory("bob", [stack.address(2)])
    await alice.send("bob", PLAINTEXT)
    assert [r.text for r in await bob.wait_for(1)] == [PLAINTEXT]
    await bob.send("alice", f"re: {PLAINTEXT}")
    await alice.wait_for(1)
    with pytest.raises(SpartanError):  # a refused call: alice is not in group2
        await alice.call("GetGroup", pb.GroupRequest(group="group2"))

    secrets = [PLAINTEXT, stack.env["SPARTAN_AUTH__TOKEN_SECRET"], alice.conn.token, bob.conn.token]
    for client in (alice, bob):
        await client.close()
    for name in reversed(list(stack.children)):  # gateways first, as a rolling shutdown would
        assert stack.terminate(name) == 0, stack.log(name)
    return secrets


def key_material(key_dir: Path) -> list[str]:
    """Private seeds from every key file, as stored (base64) and as hex."""
    found: list[str] = []
    for path in key_dir.glob("*.json"):
        stored = json.loads(path.read_text())
        for field in ("ed25519_seed", "x25519_seed"):
            if field in stored:
                found.append(stored[field])
                found.append(base64.b64decode(stored[field]).hex())
    return found


def assert_never_logged(logs: dict[str, str], secrets: list[str]) -> None:
    for name, text in logs.items():
        for secret in secrets:
            assert secret and secret not in text, f"{name} logged a secret or a plaintext"


async def test_json_logs_are_one_object_per_line_without_secrets(
        stack_factory, client_factory, tmp_path: Path) -> None:
    stack = stack_factory(gateways=2, settings={"SPARTAN_LOG__FORMAT": "json"})
    secrets = await converse_and_stop(stack, client_factory)
    secrets += key_material(tmp_path / "keys")
    assert len(secrets) >= 8

    logs = {name: stack.log(name) for name in stack.children}
    for name, text in logs.items():
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"{name} logged nothing"
        for line in lines:
            entry = json.loads(line)  # raises on any line that is not JSON
            assert isinstance(entry, dict), line
            assert {"ts", "level", "logger", "msg"} <= entry.keys(), line
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"]), line
            assert entry["level"] in {"debug", "info", "warning", "error", "critical"}, line
            assert entry.get("service") == name.split("-")[0], line
        messages = [json.loads(line)["msg"] for line in lines]
        assert any("listening on" in msg for msg in messages), name
        assert any(msg.endswith("stopped") for msg in messages), name
    assert_never_logged(logs, secrets)


async def test_text_logs_are_readable_lines_without_secrets(
        stack_factory, client_factory, tmp_path: Path) -> None:
    stack = stack_factory(gateways=2)  # config.yaml's default: log.format text
    secrets = await converse_and_stop(stack, client_factory)
    secrets += key_material(tmp_path / "keys")

    logs = {name: stack.log(name) for name in stack.children}
    for name, text in logs.items():
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"{name} logged nothing"
        for line in lines:
            assert not line.startswith("{"), line
            assert TEXT_LINE.match(line), f"{name}: unreadable line {line!r}"
        assert any("listening on" in line for line in lines), name
    assert "[rpc=Login]" in logs["gateway-1"]  # a line names the RPC it belongs to
    assert_never_logged(logs, secrets)
