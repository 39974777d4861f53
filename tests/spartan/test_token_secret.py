"""The gateways' token secret: repository values refused, the file form, compose's one-shot writer.

The refusals are checked through the real `spartan-gateway` entry point: it must exit
at once with one line that says what to do, before it waits for Redis or peers.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from spartan.admin import gen_secret
from spartan.config import AuthConfig
from spartan.token_secret import TokenSecretError, refusal, resolve, write_new_secret

ROOT = Path(__file__).resolve().parents[2]
K8S_PLACEHOLDER = (ROOT / "deploy" / "k8s" / "token-secret.txt").read_text().strip()
OLD_COMPOSE_DEFAULT = "dev-only-change-me-0f6d1c2b9a7e4f3d8c5b2a1e0d9c8b7a"


def run_gateway(settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARTAN_")}
    env |= {"PYTHONPATH": str(ROOT), "SPARTAN_REDIS__URL": "redis://127.0.0.1:9/0", **settings}
    return subprocess.run([sys.executable, "-m", "services.gateway.main", "--config", str(ROOT / "config.yaml")],
                          capture_output=True, text=True, env=env, timeout=30)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("spartan-gateway: ")
    return lines[0]


@pytest.mark.parametrize("secret", [K8S_PLACEHOLDER, OLD_COMPOSE_DEFAULT], ids=["k8s-placeholder", "old-compose"])
def test_gateway_refuses_secrets_from_the_repository(secret: str) -> None:
    line = one_line(run_gateway({"SPARTAN_AUTH__TOKEN_SECRET": secret}))
    assert "example value from the repository" in line and "spartan-admin gen-secret" in line
    assert secret not in line


def test_gateway_refuses_a_placeholder_file(tmp_path: Path) -> None:
    path = tmp_path / "token_secret"
    path.write_text(K8S_PLACEHOLDER + "\n")
    line = one_line(run_gateway({"SPARTAN_AUTH__TOKEN_SECRET_FILE": str(path)}))
    assert f"auth.token_secret_file {path}" in line and "example value" in line


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, "auth.token_secret is not set"),
    ({"SPARTAN_AUTH__TOKEN_SECRET": "short"}, "shorter than 32 characters"),
    ({"SPARTAN_AUTH__TOKEN_SECRET_FILE": "/nonexistent/token_secret"}, "cannot read it"),
    ({"SPARTAN_AUTH__TOKEN_SECRET": "a" * 64, "SPARTAN_AUTH__TOKEN_SECRET_FILE": "/x"}, "both set"),
], ids=["unset", "short", "missing-file", "both"])
def test_gateway_explains_every_unusable_secret_in_one_line(settings: dict[str, str], expected: str) -> None:
    assert expected in one_line(run_gateway(settings))


def test_the_old_variable_name_is_refused_as_an_unknown_setting() -> None:
    done = run_gateway({"SPARTAN_TOKEN_SECRET": gen_secret()})
    assert done.returncode == 2 and "unknown setting in environment: SPARTAN_TOKEN_SECRET" in done.stderr


def test_generated_secrets_are_accepted_from_the_environment_or_a_file(tmp_path: Path) -> None:
    secret = gen_secret()
    assert refusal(secret) is None and len(secret) == 64
    path = tmp_path / "token_secret"
    path.write_text(secret + "\n")
    assert resolve(AuthConfig(token_secret=secret)) == secret
    assert resolve(AuthConfig(token_secret_file=str(path))) == secret


def test_write_new_secret_writes_once_and_keeps_what_is_there(tmp_path: Path) -> None:
    path = str(tmp_path / "token_secret")
    assert write_new_secret(path, "first-" + gen_secret()) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400
    kept = Path(path).read_text()
    assert write_new_secret(path, gen_secret()) is False and Path(path).read_text() == kept
    with pytest.raises(TokenSecretError, match="cannot write"):
        write_new_secret(str(tmp_path / "missing-dir" / "token_secret"), gen_secret())


def test_admin_gen_secret_file_is_what_compose_runs(tmp_path: Path) -> None:
    path = tmp_path / "token_secret"
    command = [sys.executable, "-m", "spartan.admin", "gen-secret", "--file", str(path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)
    assert first.stdout.strip() == f"token secret written to {path}"
    assert again.stdout.strip() == f"token secret kept in {path}"
    secret = path.read_text().strip()
    assert refusal(secret) is None and secret not in first.stdout + again.stdout
