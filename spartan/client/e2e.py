"""End-to-end encryption as the client uses it: peers' keys, pins, sealing and opening 1:1 messages.

Peer keys come from the directory through the gateway, which the server runs, so
they are pinned on first use and every later difference is the user's decision:
a changed key (identity or agreement key) is only *offered* — shown with its new
safety number — and nothing more is encrypted to that peer until the user accepts
it (`accept`, the `/accept-key` command). Messages under the offered key are not
shown as the peer's. `/verify` marks exactly the key whose number it showed.

Keys are re-fetched on the client's schedule: the first use of a peer fetches
them, and a sign from the server that they may have changed (a KEY_UPDATE, a
message that fails its checks) re-fetches them at most once per peer per
`REFETCH_SECONDS`; a user's command may fetch at any time. Nothing here ever
sends plaintext anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from spartan.crypto import DecryptError
from spartan.crypto.identity import Identity, verify_public_keys
from spartan.crypto.pairwise import KeyDeleted, PairwiseCipher, PairwiseCiphers
from spartan.crypto.pins import PinResult, PinStore
from spartan.crypto.prekeys import ROTATE_SECONDS, OwnPrekeys
from spartan.crypto.safety import safety_number
from spartan.errors import InvalidArgument, SpartanError
from spartan.naming import dm_conversation
from spartan.v1 import pb

FetchKeys = Callable[[str], Awaitable[pb.PublicKeys]]
Warn = Callable[[str], None]

REFETCH_SECONDS = 30.0  # server-prompted re-fetches of a peer's keys: at most one per this long
OK, UNACCEPTED, FORGED, EXPIRED = "", "unaccepted", "forged", "expired"


class PeerHasNoKeys(Exception):
    """The peer never logged in, so there is no key to encrypt to yet."""


class NoPrekey(PeerHasNoKeys):
    """The peer has not logged in since prekeys exist (or the server withholds theirs): nothing can be sealed yet.

    Never a reason to fall back to the static key: that would let a server strip
    prekeys from the directory to take forward secrecy away.
    """


class KeyNotAccepted(PeerHasNoKeys):
    """The peer's keys changed and the user has not accepted the new ones: nothing is encrypted to them.

    A subclass so that every path waiting for a peer's keys (the send queue, group
    key distribution) waits for the user's decision the same way.
    """


@dataclass(frozen=True)
class Opened:
    """A 1:1 message opened: `text`, or None with why (UNACCEPTED: under an offered key; EXPIRED: sealed to
    a prekey this device deleted; FORGED: any other failure)."""

    text: str | None
    problem: str = OK


class ClientCrypto:
    def __init__(
        self,
        identity: Identity,
        pins: PinStore,
        fetch_keys: FetchKeys,
        warn: Warn,
        prekeys: OwnPrekeys | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`prekeys`: mine, to seal my own copies to and open what was sealed to me (None: in memory only)."""
        self.identity = identity
        self.user = identity.user
        self.pins = pins
        self.fetch_keys = fetch_keys
        self.warn = warn
        self.clock = clock
        self.wall_clock = wall_clock
        self.prekeys = prekeys or OwnPrekeys(identity, clock=wall_clock)
        self.ciphers = PairwiseCiphers(identity, self.prekeys)
        self.keys: dict[str, pb.PublicKeys] = {}  # accepted (pinned) keys per peer
        self.offered: dict[str, pb.PublicKeys] = {}  # changed keys waiting for the user's decision
        self.shown: dict[str, bytes] = {}  # the identity key whose safety number /verify showed, per peer
        self.stale: set[str] = set()  # the server hinted that these peers' keys changed
        self._refetched: dict[str, float] = {}  # clock() of the last server-prompted re-fetch per peer

    # ------------------------------------------------------------------ keys
    async def peer_keys(self, peer: str) -> pb.PublicKeys:
        """The accepted keys of `peer`, to encrypt to or check signatures against.

        Raises `PeerHasNoKeys` (never logged in) or `KeyNotAccepted` (a change waits for the user).
        """
        keys = await self._current(peer)
        if peer in self.offered:
            raise KeyNotAccepted(peer)
        return keys

    async def _current(self, peer: str) -> pb.PublicKeys:
        if peer in self.stale and self._due(peer):
            await self._refetch(peer)
        if peer in self.keys:
            return self.keys[peer]
        if peer in self.offered:
            raise KeyNotAccepted(peer)
        return await self._fetch(peer)

    def _due(self, peer: str) -> bool:
        last = self._refetched.get(peer)
        return last is None or self.clock() - last >= REFETCH_SECONDS

    async def _refetch(self, peer: str) -> None:
        """A server-prompted re-fetch (the caller checked it is due); failures keep the keys held."""
        self._refetched[peer] = self.clock()
        self.stale.discard(peer)
        try:
            await self._fetch(peer)
        except PeerHasNoKeys:  # includes KeyNotAccepted: the offer is recorded and was announced
            pass
        except SpartanError:
            self.stale.add(peer)

    async def fetch_now(self, peer: str) -> None:
        """Fetch `peer`'s keys because the user asked (e.g. `/verify`); a change becomes an offer."""
        try:
            await self._fetch(peer)
        except KeyNotAccepted:
            pass

    async def _fetch(self, peer: str) -> pb.PublicKeys:
        try:
            keys = await self.fetch_keys(peer)
        except SpartanError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                raise PeerHasNoKeys(peer) from None
            raise
        try:
            verify_public_keys(keys, user=peer)
        except InvalidArgument as exc:
            self.warn(f"The server sent keys for {peer} that fail their checks ({exc.message}); they were refused.")
            raise PeerHasNoKeys(peer) from None
        if self.pins.check(peer, keys.identity_key, keys.agreement_key) is PinResult.CHANGED:
            self._restore_pinned(peer)
            self._offer(peer, keys)
            raise KeyNotAccepted(peer)
        self.pins.pin(peer, keys.identity_key, keys.agreement_key, keys.agreement_signature)
        self.offered.pop(peer, None)  # the directory is back to the pinned keys
        self.keys[peer] = keys
        return keys

    def _restore_pinned(self, peer: str) -> None:
        """Hold the pinned keys (e.g. after a restart) so messages signed with them still open."""
        pinned = self.pins.pinned_keys(peer)
        if peer in self.keys or pinned is None:
            return
        identity_key, agreement_key, signature = pinned
        keys = pb.PublicKeys(
            user=peer, identity_key=identity_key, agreement_key=agreement_key, agreement_signature=signature
        )
        try:
            verify_public_keys(keys, user=peer)
        except InvalidArgument:
            return
        self.keys[peer] = keys

    def _offer(self, peer: str, keys: pb.PublicKeys) -> None:
        previous = self.offered.get(peer)
        self.offered[peer] = keys
        if previous is not None and previous.SerializeToString() == keys.SerializeToString():
            return  # announced already
        self.warn(
            f"WARNING: {peer}'s security key has changed! Nothing more is sent to {peer} until you accept "
            f"the new key. If you did not expect this, someone may be intercepting your messages: compare "
            f"the new safety number {self.number(peer, keys.identity_key)} with {peer} over another "
            f"channel, then type /accept-key {peer} (or /verify {peer} to see it again)."
        )

    async def on_key_update(self, peer: str) -> None:
        """The server says `peer` registered keys: re-fetch them if held and due (else at the next due use)."""
        if peer not in self.keys and peer not in self.offered:
            return  # none held: the next use fetches them
        self.stale.add(peer)
        if self._due(peer):
            await self._refetch(peer)

    def accept(self, peer: str) -> pb.PublicKeys:
        """The user accepts the offered keys of `peer`: pin them (verified mark cleared) and use them.

        Raises KeyError if nothing is offered, `PinConflict` for a peer pinned in configuration.
        """
        keys = self.offered[peer]
        self.pins.accept(peer, keys.identity_key, keys.agreement_key, keys.agreement_signature)
        del self.offered[peer]
        self.keys[peer] = keys
        self.ciphers.forget(peer)
        self.shown.pop(peer, None)
        return keys

    def number(self, peer: str, identity_key: bytes) -> str:
        """The safety number of my identity key and `identity_key` for `peer`."""
        return safety_number(self.user, self.identity.identity_key, peer, identity_key)

    # -------------------------------------------------------------- messages
    async def cipher_for(self, peer: str) -> PairwiseCipher:
        """The cipher sealing to `peer`'s current prekey; one older than a day is re-fetched first (when due).

        Raises `PeerHasNoKeys`, `KeyNotAccepted` or `NoPrekey`.
        """
        keys = await self.peer_keys(peer)
        if keys.HasField("prekey") and self.wall_clock() - keys.prekey.created_at_s >= ROTATE_SECONDS:
            self.stale.add(peer)  # still usable (its owner keeps it 30 days after replacing it)
            keys = await self.peer_keys(peer)
        if not keys.HasField("prekey"):
            self.stale.add(peer)
            raise NoPrekey(peer)
        return self.ciphers.get(peer, keys)

    async def seal(self, peer: str, text: str, message_id: str) -> bytes:
        cipher = await self.cipher_for(peer)
        return cipher.encrypt(
            text.encode("utf-8"),
            message_id=message_id,
            sender=self.user,
            recipient=peer,
            conversation=dm_conversation(self.user, peer),
        )

    async def open(self, message: pb.Message) -> str | None:
        """The plaintext of a 1:1 message, or None if it cannot be authenticated."""
        return (await self.open_checked(message)).text

    async def open_checked(self, message: pb.Message) -> Opened:
        """Check the signature against the accepted keys, then decrypt; never raises for a bad message.

        A failure may mean the peer has new keys: they are re-fetched when due, and
        a message that opens only under an offered (unaccepted) key is UNACCEPTED.
        """
        peer = message.sender if message.sender != self.user else message.recipient
        for attempt in (1, 2):
            try:
                keys = await self._current(peer)
            except KeyNotAccepted:
                if peer not in self.keys:
                    break
                keys = self.keys[peer]  # the pinned keys, restored: a change waits, they still open
            except PeerHasNoKeys:
                return Opened(None, FORGED)
            try:
                text = self._try_open(self.ciphers.get(peer, keys), message)
            except KeyDeleted:
                return Opened(None, EXPIRED)
            if text is not None:
                return Opened(text)
            self.stale.add(peer)
            if attempt == 2 or not self._due(peer):
                break
        offered = self.offered.get(peer)
        if offered is not None and self._opens(PairwiseCipher(self.identity, peer, offered, self.prekeys), message):
            return Opened(None, UNACCEPTED)
        return Opened(None, FORGED)

    @classmethod
    def _opens(cls, cipher: PairwiseCipher, message: pb.Message) -> bool:
        try:
            return cls._try_open(cipher, message) is not None
        except KeyDeleted:
            return False

    @staticmethod
    def _try_open(cipher: PairwiseCipher, message: pb.Message) -> str | None:
        """The text, or None if the message fails its checks; raises `KeyDeleted` (signature checked first)."""
        try:
            return cipher.decrypt(
                message.body,
                message_id=message.id,
                sender=message.sender,
                recipient=message.recipient,
                conversation=message.conversation,
            ).decode("utf-8")
        except KeyDeleted:
            raise
        except (DecryptError, UnicodeDecodeError):
            return None


class Complaints:
    """One visible line per sender per `seconds` about dropped messages, so a flood of forgeries is one line."""

    def __init__(self, seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def count(self, sender: str) -> int | None:
        """None: stay quiet (counted for the next line); else how many were dropped since the last line, plus one."""
        now = self.clock()
        last = self._last.get(sender)
        if last is not None and now - last < self.seconds:
            self._held[sender] = self._held.get(sender, 0) + 1
            return None
        self._last[sender] = now
        return self._held.pop(sender, 0) + 1
