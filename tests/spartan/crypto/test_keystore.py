"""Key store: identity files are private (0600 in a 0700 directory) and loose ones are refused."""
from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from spartan.crypto import Identity, KeyStoreError, key_path, load, load_or_create, save
from spartan.errors import InvalidArgument


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_writes_0600_in_a_0700_directory_and_loads_back(tmp_path: Path) -> None:
    directory = tmp_path / "nested" / "keys"
    identity = Identity.generate("alice")
    path = save(identity, directory)
    assert path == directory / "alice.json"
    assert _mode(path) == 0o600
    assert _mode(directory) == 0o700
    loaded = load("alice", directory)
    assert loaded.identity_key == identity.identity_key
    assert loaded.agreement_key == identity.agreement_key
    assert [p.name for p in directory.iterdir()] == ["alice.json"]  # no temporary files left


def test_group_or_world_readable_file_is_refused(tmp_path: Path) -> None:
    path = save(Identity.generate("alice"), tmp_path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyStoreError, match=r"mode 0644.*chmod 600"):
        load("alice", tmp_path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyStoreError, match="mode 0640"):
        load_or_create("alice", tmp_path)
    os.chmod(path, 0o600)
    load("alice", tmp_path)


def test_load_or_create_creates_once(tmp_path: Path) -> None:
    first, created = load_or_create("bob", tmp_path)
    again, created_again = load_or_create("bob", tmp_path)
    assert created and not created_again
    assert again.identity_key == first.identity_key


def test_concurrent_creation_agrees_on_one_identity(tmp_path: Path) -> None:
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(load_or_create("carol", tmp_path)[0].identity_key)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert load("carol", tmp_path).identity_key == results[0]


def test_directory_comes_from_argument_then_env_then_home(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPARTAN_KEY_DIR", raising=False)
    assert key_path("alice") == tmp_path / "home" / ".spartan" / "keys" / "alice.json"
    monkeypatch.setenv("SPARTAN_KEY_DIR", str(tmp_path / "env"))
    assert key_path("alice") == tmp_path / "env" / "alice.json"
    assert key_path("alice", tmp_path / "arg") == tmp_path / "arg" / "alice.json"
    identity, created = load_or_create("alice")
    assert created and (tmp_path / "env" / "alice.json").exists()


def test_missing_corrupt_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="no key file"):
        load("dave", tmp_path)
    path = save(Identity.generate("dave"), tmp_path)
    path.write_text("{not json")
    with pytest.raises(KeyStoreError, match="corrupt"):
        load("dave", tmp_path)
    document = json.loads(Path(save(Identity.generate("erin"), tmp_path)).read_text())
    path.write_text(json.dumps(document))
    with pytest.raises(KeyStoreError, match="keys of erin, not of dave"):
        load("dave", tmp_path)
    document["user"] = "dave"
    document["identity_key"] = "00" * 32
    path.write_text(json.dumps(document))
    with pytest.raises(KeyStoreError, match="does not match its seed"):
        load("dave", tmp_path)


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    target = save(Identity.generate("frank"), tmp_path / "real")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "frank.json").symlink_to(target)
    with pytest.raises(KeyStoreError, match="cannot open"):
        load("frank", tmp_path / "link")


@pytest.mark.parametrize("user", ["../etc/passwd", "a/b", ".hidden", ""])
def test_unsafe_user_names_are_rejected(tmp_path: Path, user: str) -> None:
    with pytest.raises(InvalidArgument):
        key_path(user, tmp_path)
