"""The one de-duplication and resume rule of the gateway's streams and both clients.

Proven here: `is_new` drops a message at or before the newest offset had in the same
epoch, lets through a new epoch, other conversations and messages without a position
(notices); `advance` moves only for such a new message; the cursors are the newest
positions had; the positions dict given is the one kept (a client shares its journal's).
"""
from __future__ import annotations

from services.gateway.stream_session import StreamSession
from spartan.read_positions import START, ReadPositions
from spartan.v1 import pb

DM = "dm:alice:bob"


def message(offset: int, conversation: str = DM, epoch: str = "e1") -> pb.Message:
    return pb.Message(id=f"{conversation}#{epoch}#{offset}", kind=pb.CHAT, conversation=conversation,
                      epoch=epoch, offset=offset)


def test_is_new_drops_what_the_reader_already_has() -> None:
    read = ReadPositions()
    first = message(5)
    assert read.is_new(first)
    read.mark(first)
    assert not read.is_new(message(5))  # the same message again (live and replayed)
    assert not read.is_new(message(3))  # older than what was had
    assert read.is_new(message(6))
    assert read.is_new(message(1, epoch="e2"))  # Redis lost its data: offsets start again
    assert read.is_new(message(1, conversation="group:team"))  # positions are per conversation
    notice = pb.Message(id="n", kind=pb.NOTICE, text="reconnected")
    assert read.is_new(notice)
    read.mark(notice)
    assert read.is_new(notice)  # messages without a position are never taken for duplicates


def test_advance_moves_only_for_a_new_message_with_a_position() -> None:
    read = ReadPositions()
    assert read.advance(message(4))
    assert not read.advance(message(4)) and not read.advance(message(2))
    assert read.positions == {DM: ("e1", 4)}
    assert not read.advance(pb.Message(id="n", kind=pb.NOTICE, text="hello"))
    assert read.advance(message(1, epoch="e2"))
    assert read.positions == {DM: ("e2", 1)}


def test_cursors_are_the_newest_positions_had() -> None:
    read = ReadPositions()
    assert read.cursor(DM) == pb.Cursor(conversation=DM, offset=0, epoch="")
    read.mark(message(4))
    read.mark(message(7))
    assert read.cursor(DM) == pb.Cursor(conversation=DM, offset=7, epoch="e1")
    read.mark(message(2, epoch="e2"))
    read.positions.setdefault("group:team", START)  # followed from its start: replayed from offset 0
    assert read.cursors() == [pb.Cursor(conversation=DM, offset=2, epoch="e2"),
                              pb.Cursor(conversation="group:team", offset=0, epoch="")]


def test_the_dict_given_is_the_one_kept() -> None:
    journal: dict[str, tuple[str, int]] = {DM: ("e1", 3)}
    read = ReadPositions(journal)
    assert not read.is_new(message(3))
    read.mark(message(9))
    assert journal[DM] == ("e1", 9)


def test_a_gateway_stream_session_follows_the_same_rule() -> None:
    session = StreamSession("bob", "s1", queue_size=10)
    session.mark(message(5))
    assert not session.is_new(message(5)) and session.is_new(message(6))
    assert session.cursor(DM) == pb.Cursor(conversation=DM, offset=5, epoch="e1")
