"""Where a reader is in each conversation's delivery log: the newest (epoch, offset) it has.

One rule for the gateway's streams and both clients: a message is new unless the
reader's position in its conversation has the same epoch and an offset at least as
new; a message without an offset (a notice, a chat request) is always new, and a new
epoch (a Redis that lost its data) starts the count again. The positions are also
the cursors a stream resumes from.
"""

from __future__ import annotations

from spartan.v1 import pb

Position = tuple[str, int]  # (epoch, offset)
START: Position = ("", 0)  # before the first message: a resume from here replays the whole log


class ReadPositions:
    def __init__(self, positions: dict[str, Position] | None = None) -> None:
        """`positions` (conversation -> newest had) is used as given, not copied: a client may share its journal's."""
        self.positions: dict[str, Position] = {} if positions is None else positions

    def is_new(self, message: pb.Message) -> bool:
        """True unless this reader already has `message` (same epoch, offset not newer)."""
        if not message.conversation or not message.offset:
            return True
        seen = self.positions.get(message.conversation)
        return seen is None or seen[0] != message.epoch or message.offset > seen[1]

    def mark(self, message: pb.Message) -> None:
        """The reader has `message`, which `is_new` said was new: resume after it."""
        if message.conversation and message.offset:
            self.positions[message.conversation] = (message.epoch, message.offset)

    def advance(self, message: pb.Message) -> bool:
        """Move past `message` if it is new and has an offset; True if the position moved."""
        if not message.conversation or not message.offset or not self.is_new(message):
            return False
        self.mark(message)
        return True

    def cursor(self, conversation: str) -> pb.Cursor:
        epoch, offset = self.positions.get(conversation, START)
        return pb.Cursor(conversation=conversation, offset=offset, epoch=epoch)

    def cursors(self) -> list[pb.Cursor]:
        return [self.cursor(conversation) for conversation in self.positions]
