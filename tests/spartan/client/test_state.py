"""The client state journal remembers the ids of shown messages across restarts, bounded, compacted rarely."""
from __future__ import annotations

from pathlib import Path

from spartan.client.state import COMPACT_AFTER_LINES, SEEN_IDS_KEPT, ClientState


def test_shown_ids_survive_a_restart(tmp_path: Path) -> None:
    state = ClientState(tmp_path / "alice.state")
    assert state.remember("m-1") and state.remember("m-2")
    assert not state.remember("m-1")
    state.close()
    again = ClientState(tmp_path / "alice.state")
    assert not again.remember("m-1") and not again.remember("m-2")
    assert again.remember("m-3")
    again.close()


def test_only_the_newest_ids_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "alice.state"
    state = ClientState(path)
    for number in range(SEEN_IDS_KEPT + 5):
        state.remember(f"id-{number}")
    assert len(state.seen) == SEEN_IDS_KEPT
    state.close()
    again = ClientState(path)
    assert len(again.seen) == SEEN_IDS_KEPT
    assert again.remember("id-4")  # among the 5 oldest: forgotten
    assert not again.remember(f"id-{SEEN_IDS_KEPT + 4}")  # the newest: kept
    # The snapshot holds the kept ids once each, and the next lines do not rewrite it every time.
    lines = path.read_text().splitlines()
    assert len(lines) <= SEEN_IDS_KEPT + 1
    again.remember("one-more")
    assert len(path.read_text().splitlines()) == len(lines) + 1
    again.close()


def test_the_journal_is_rewritten_when_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "alice.state"
    state = ClientState(path)
    for number in range(COMPACT_AFTER_LINES + 10):
        state.record("dm:alice:bob", "e", number + 1)
    assert len(path.read_text().splitlines()) < COMPACT_AFTER_LINES
    state.close()
    assert ClientState(path).positions == {"dm:alice:bob": ("e", COMPACT_AFTER_LINES + 10)}
