"""What a client keeps on disk next to the user's keys: read positions, unsent messages, shown ids,
group heads.

Why: a restarted client must resume where it was, not only a reconnecting one, and
a message typed for someone who never logged in (no key to encrypt to yet) must
survive quitting. The ids of the newest `SEEN_IDS_KEPT` messages shown (or sent)
are kept too, so a server replaying an old message to a restarted client is
caught: it is dropped, not shown again. The file `<key dir>/<user>.state` is a
journal of JSON lines, each written with one `write` as it happens (a killed process loses nothing it wrote);
it is rewritten as one snapshot when it grows long. Mode 0600, like the key: unsent
messages are plaintext until they can be encrypted.

The last membership change verified per group is kept too, so a restarted client
still refuses a change that does not extend it (`spartan.crypto.membership`). So are
messages that arrived signed with a peer's new key the user has not accepted yet (the
newest `HELD_KEPT`, still encrypted): accepting the key shows them, also after a restart,
and says how many older ones the bound dropped.

Lines: `{"c": conversation, "e": epoch, "o": offset}` (a position),
`{"q": id, "to": peer, "t": text}` (queued), `{"sent": id}` (left the outbox),
`{"s": id}` (a message id shown or sent),
`{"g": group, "v": version, "h": hash in hex, "m": members}` (a group's verified head),
`{"k": id, "from": peer, "m": message in base64}` (held for a key), `{"released": id}` and
`{"dropped": peer, "n": count}` (held messages of `peer` the bound dropped so far).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

from spartan.crypto.keystore import key_dir

log = logging.getLogger("spartan.client")

COMPACT_AFTER_LINES = 5000  # journal lines beyond the last snapshot that trigger a new one
SEEN_IDS_KEPT = 10_000  # newest message ids remembered, over all conversations
HELD_KEPT = 500  # newest messages held for an unaccepted key, over all peers


class ClientState:
    """Positions per conversation and the outbox, persisted when `path` is set (else in memory only)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.positions: dict[str, tuple[str, int]] = {}
        self.outbox: dict[str, tuple[str, str]] = {}  # message id -> (peer, text), oldest first
        self.seen: OrderedDict[str, None] = OrderedDict()  # ids shown or sent, oldest first
        self.heads: dict[str, tuple[int, str, list[str]]] = {}  # group -> (version, hash hex, members)
        self.held: OrderedDict[str, tuple[str, bytes]] = OrderedDict()  # id -> (peer, message), oldest first
        self.dropped: dict[str, int] = {}  # peer -> held messages dropped for the bound since the last release
        self._lines = 0
        self._compact_at = COMPACT_AFTER_LINES
        self._fd: int | None = None
        if path is not None:
            self._load(path)
            self._compact()

    @classmethod
    def for_user(cls, user: str, directory: str | os.PathLike[str] | None = None) -> ClientState:
        return cls(key_dir(directory) / f"{user}.state")

    def record(self, conversation: str, epoch: str, offset: int) -> bool:
        """Remember that `conversation` is had up to (epoch, offset); False if that is no news."""
        if self.positions.get(conversation) == (epoch, offset):
            return False
        self.positions[conversation] = (epoch, offset)
        self._write({"c": conversation, "e": epoch, "o": offset})
        return True

    def forget(self, conversation: str) -> None:
        if self.positions.pop(conversation, None) is not None:
            self._write({"c": conversation, "e": "", "o": -1})

    def queue(self, message_id: str, peer: str, text: str) -> None:
        self.outbox[message_id] = (peer, text)
        self._write({"q": message_id, "to": peer, "t": text})

    def sent(self, message_id: str) -> None:
        if self.outbox.pop(message_id, None) is not None:
            self._write({"sent": message_id})

    def remember(self, message_id: str) -> bool:
        """Record that a message was shown (or sent); False if its id was already known (a replay)."""
        if message_id in self.seen:
            return False
        self._see(message_id)
        self._write({"s": message_id})
        return True

    def _see(self, message_id: str) -> None:
        self.seen[message_id] = None
        self.seen.move_to_end(message_id)
        while len(self.seen) > SEEN_IDS_KEPT:
            self.seen.popitem(last=False)

    def hold(self, message_id: str, peer: str, message: bytes) -> list[str]:
        """Keep a message `peer` signed with a key the user has not accepted (serialized, still encrypted).

        Returns the peers whose oldest held message the bound dropped for it (counted in `dropped`)."""
        self._write({"k": message_id, "from": peer, "m": base64.b64encode(message).decode()})
        losers = self._hold(message_id, peer, message)
        for loser in losers:
            self.dropped[loser] = self.dropped.get(loser, 0) + 1
            self._write({"dropped": loser, "n": self.dropped[loser]})
        return losers

    def _hold(self, message_id: str, peer: str, message: bytes) -> list[str]:
        self.held[message_id] = (peer, message)
        losers = []
        while len(self.held) > HELD_KEPT:
            losers.append(self.held.popitem(last=False)[1][0])
        return losers

    def release(self, peer: str) -> list[bytes]:
        """The messages held for `peer`'s key, oldest first; they are no longer kept, nor is the count dropped."""
        released = [(i, message) for i, (sender, message) in self.held.items() if sender == peer]
        for message_id, _ in released:
            del self.held[message_id]
            self._write({"released": message_id})
        if self.dropped.pop(peer, 0):
            self._write({"dropped": peer, "n": 0})
        return [message for _, message in released]

    def record_head(self, group: str, version: int, digest: str, members: list[str]) -> None:
        """Remember the last verified membership change of `group`."""
        self.heads[group] = (version, digest, members)
        self._write({"g": group, "v": version, "h": digest, "m": members})

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ file
    def _apply(self, entry: dict[str, object]) -> None:
        if "c" in entry:
            offset = int(str(entry["o"]))
            if offset < 0:
                self.positions.pop(str(entry["c"]), None)
            else:
                self.positions[str(entry["c"])] = (str(entry["e"]), offset)
        elif "q" in entry:
            self.outbox[str(entry["q"])] = (str(entry["to"]), str(entry["t"]))
        elif "sent" in entry:
            self.outbox.pop(str(entry["sent"]), None)
        elif "s" in entry:
            self._see(str(entry["s"]))
        elif "k" in entry:
            self._hold(str(entry["k"]), str(entry["from"]), base64.b64decode(str(entry["m"])))
        elif "released" in entry:
            self.held.pop(str(entry["released"]), None)
        elif "dropped" in entry:
            count = int(str(entry["n"]))
            if count > 0:
                self.dropped[str(entry["dropped"])] = count
            else:
                self.dropped.pop(str(entry["dropped"]), None)
        elif "g" in entry:
            members = entry["m"]
            if not isinstance(members, list):
                raise TypeError("members must be a list")
            self.heads[str(entry["g"])] = (int(str(entry["v"])), str(entry["h"]), [str(m) for m in members])

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        for number, line in enumerate(text.splitlines(), 1):
            try:
                self._apply(json.loads(line))
            except (ValueError, KeyError, TypeError):
                # A line cut short by a crash (only the last can be): what came before stands.
                log.warning("%s: ignoring unreadable line %d", path, number)

    def _compact(self) -> None:
        """Rewrite the journal as one line per position, queued message and seen id, atomically."""
        assert self.path is not None
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        entries = [{"c": c, "e": e, "o": o} for c, (e, o) in self.positions.items()]
        entries += [{"q": i, "to": p, "t": t} for i, (p, t) in self.outbox.items()]
        entries += [{"s": i} for i in self.seen]
        entries += [{"g": g, "v": v, "h": h, "m": m} for g, (v, h, m) in self.heads.items()]
        entries += [{"k": i, "from": p, "m": base64.b64encode(m).decode()} for i, (p, m) in self.held.items()]
        entries += [{"dropped": p, "n": n} for p, n in self.dropped.items()]
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
        os.replace(temporary, self.path)
        self._lines = len(entries)
        self._compact_at = len(entries) + COMPACT_AFTER_LINES
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)

    def _write(self, entry: dict[str, object]) -> None:
        if self.path is None:
            return
        if self._lines >= self._compact_at:
            self._compact()
        assert self._fd is not None
        os.write(self._fd, (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        self._lines += 1
