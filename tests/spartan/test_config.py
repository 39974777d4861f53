"""config.yaml: the seed file loads unchanged, env overrides every key, bad settings name the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spartan.config import ConfigError, env_names, load_config

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT.parent / "shared" / "seed" / "config.yaml"


def test_shipped_file_starts_with_the_seed_file_unchanged() -> None:
    shipped = (ROOT / "config.yaml").read_text()
    if SEED.exists():
        assert shipped.startswith(SEED.read_text())
    config = load_config(ROOT / "config.yaml", env={})
    assert config.port == 3000
    assert config.users == ["alice", "bob", "charlie", "eve", "foo", "bar", "baz", "qux"]
    assert config.groups == {"group1": ["alice", "bob", "charlie", "eve"], "group2": ["foo", "bar", "baz", "qux"]}
    assert (config.max_num_messages_per_user, config.max_call_per_30_seconds_per_user) == (5, 3)


def test_seed_file_alone_loads(tmp_path: Path) -> None:
    seed = tmp_path / "config.yaml"
    seed.write_text((ROOT / "config.yaml").read_text().split("# ----")[0])
    assert load_config(seed, env={}).port == 3000


def test_environment_overrides_top_level_and_sections() -> None:
    config = load_config(ROOT / "config.yaml", env={
        "SPARTAN_PORT": "3005", "SPARTAN_USERS": "ann,ben", "SPARTAN_GROUPS": "{team: [ann, ben]}",
        "SPARTAN_REDIS__URL": "redis://r:6379/1", "SPARTAN_RATE__APIS": "{send: {rate: 15, per_seconds: 1}}",
        "SPARTAN_LOG__FORMAT": "json"})
    assert config.port == 3005 and config.users == ["ann", "ben"] and config.groups == {"team": ["ann", "ben"]}
    assert config.redis.url == "redis://r:6379/1"
    assert config.rate.apis == {"send": {"rate": 15.0, "per_seconds": 1.0}}
    assert config.log.format == "json"


@pytest.mark.parametrize(("content", "env", "message"), [
    ("port: 3000\nusers: [a]\nportt: 1\n", {}, "unknown setting: portt"),
    ("port: 3000\nusers: [a]\nredis: {urll: x}\n", {}, "unknown setting: redis.urll"),
    ("port: '3000'\nusers: [a]\n", {}, "port: expected a whole number"),
    ("port: 70000\nusers: [a]\n", {}, "port: must be between 1 and 65535"),
    ("port: 3000\nusers: [Alice]\n", {}, "users[0]"),
    ("port: 3000\nusers: [a]\ngroups: {g: [zed]}\n", {}, "groups.g: 'zed' is not in users"),
    ("port: 3000\nusers: [a]\n", {"SPARTAN_REDIS__URLX": "x"}, "unknown setting in environment: SPARTAN_REDIS__URLX"),
    ("port: 3000\nusers: [a]\n", {"SPARTAN_GATEWAY__MAX_STREAMS": "many"}, "gateway.max_streams"),
    ("port: 3000\nusers: [a]\nlog: {format: xml}\n", {}, "log.format"),
    ("port: 3000\nusers: [a]\n", {"SPARTAN_GATEWAY__MAX_STREAMS_PER_USER": "0"}, "gateway.max_streams_per_user"),
    ("port: 3000\nusers: [a]\n", {"SPARTAN_GATEWAY__MAX_CONNECTIONS": "-5"}, "gateway.max_connections"),
    ("port: 3000\nusers: [a]\n", {"SPARTAN_PRESENCE__MAX_GROUP_MEMBERS": "1"}, "presence.max_group_members"),
    ("port: 3000\nusers: [a, b, c]\ngroups: {g: [a, b, c]}\npresence: {max_group_members: 2}\n", {},
     "groups.g: 3 members; presence.max_group_members allows 2"),
    ("port: [3000\n", {}, "not valid YAML"),
    ("port: 3000\nusers: [a]\n", {"SPARTAN_REDIS__URL": "localhost:6379"},
     "redis.url: expected a redis://, rediss://, unix:// or redis\\+cluster://host:port,… address, "
     "got 'localhost:6379'"),
    ("port: 3000\nusers: [a]\n", {"SPARTAN_REDIS__URL": "redis+cluster://10.0.0.1:7000,10.0.0.2"},
     "redis.url: a cluster node is host:port, got '10.0.0.2' in 'redis\\+cluster://10.0.0.1:7000,10.0.0.2'"),
])
def test_bad_settings_fail_naming_the_key(tmp_path: Path, content: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path, env=env)


def test_the_shipped_config_loads_with_the_default_limits() -> None:
    config = load_config(ROOT / "config.yaml", env={})
    assert config.gateway.max_streams_per_user == 16 and config.gateway.max_resume_cursors == 1000
    assert config.gateway.max_connections == 15000 and config.presence.max_group_members == 256


def test_every_setting_has_an_environment_name() -> None:
    names = env_names()
    assert {"SPARTAN_PORT", "SPARTAN_REDIS__URL", "SPARTAN_AUTH__TOKEN_SECRET", "SPARTAN_TLS__CA",
            "SPARTAN_GATEWAY__MAX_CONNECTION_AGE_SECONDS", "SPARTAN_KEY_DIR"} <= names


def test_a_service_with_a_bad_setting_exits_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "services.presence.main", "--config", str(ROOT / "config.yaml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SPARTAN_PRESENCE__LEASE_SECONDS": "-1"})
    assert done.returncode == 2
    assert done.stderr.strip() == "spartan-presence: config error: presence.lease_seconds: must be greater than zero, got -1.0"
