"""The client state journal remembers the ids of shown messages and the messages held for an unaccepted key
across restarts, bounded, compacted rarely."""
from __future__ import annotations

from pathlib import Path

from spartan.client.state import COMPACT_AFTER_LINES, HELD_KEPT, SEEN_IDS_KEPT, ClientState


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


def test_messages_held_for_a_key_survive_a_restart_until_released(tmp_path: Path) -> None:
    path = tmp_path / "alice.state"
    state = ClientState(path)
    state.hold("m-1", "bob", b"\x00sealed one")
    state.hold("m-2", "charlie", b"sealed two")
    state.hold("m-3", "bob", b"sealed three\n")
    state.close()
    again = ClientState(path)
    assert again.release("bob") == [b"\x00sealed one", b"sealed three\n"]  # oldest first, bytes intact
    assert again.release("bob") == []
    again.close()
    after = ClientState(path)
    assert after.release("bob") == [] and after.release("charlie") == [b"sealed two"]
    after.close()


def test_only_the_newest_held_messages_are_kept(tmp_path: Path) -> None:
    state = ClientState(tmp_path / "alice.state")
    for number in range(HELD_KEPT + 3):
        state.hold(f"m-{number}", "bob", f"sealed {number}".encode())
    held = state.release("bob")
    assert len(held) == HELD_KEPT and held[0] == b"sealed 3"
    state.close()


def test_held_messages_the_bound_dropped_are_counted_per_sender_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "alice.state"
    state = ClientState(path)
    assert state.hold("c-0", "charlie", b"from charlie") == []
    for number in range(HELD_KEPT):
        dropped = state.hold(f"b-{number}", "bob", b"from bob")
    assert dropped == ["charlie"]  # the oldest held message overall goes, whoever sent it
    assert state.hold("b-last", "bob", b"from bob") == ["bob"]
    assert state.dropped == {"charlie": 1, "bob": 1}
    state.close()
    again = ClientState(path)  # opening rewrites the journal as one snapshot: the counts are in it
    assert again.dropped == {"charlie": 1, "bob": 1}
    again.close()
    after = ClientState(path)
    assert after.dropped == {"charlie": 1, "bob": 1}
    assert len(after.release("bob")) == HELD_KEPT and after.dropped == {"charlie": 1}
    assert after.release("charlie") == [] and after.dropped == {}
    after.close()
    assert ClientState(path).dropped == {}
