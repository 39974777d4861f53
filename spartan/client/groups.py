"""Group chats on the client: sender keys, their distribution, and sealing/opening group messages.

Membership is what members signed: each change is a record signed by the member who
made it, chained by hash (`spartan.crypto.membership`). The client keeps the last
change it verified per group (its head, in the state journal), moves it only along
records that extend it, shows each such change, and says so when the server lists a
member no signed change added, or when another member's messages show a change the
server has not shown this client.

Every member keeps one sender key per group (`SenderKeyRing`). Before its first
group message, and again after every verified membership change, a member makes a
fresh key and sends it to every verified other member in one `SendSenderKeys` call,
each copy sealed on the
pairwise channel with that member. The gateway keeps the newest few keys per
(recipient, group, sender) in the recipient's key inbox and replays them when the
recipient's stream opens, so a member who was offline still gets them. A removed
member gets none of the new keys and a new member none of the old ones.

Group messages are encrypted once under the sender's key and signed with the
sender's identity key (`spartan.crypto.sender_keys`); receivers check the signature
against the directory key, so neither the server nor another member can forge one.

`ClientGroups` is the part every client needs (the terminal client and the headless
one); the terminal client shows groups with `spartan.client.group_chat` and runs the
group commands of `spartan.client.group_commands`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from spartan.client.api import GatewayApi
from spartan.client.e2e import ClientCrypto, PeerHasNoKeys
from spartan.client.state import ClientState
from spartan.crypto import DecryptError
from spartan.crypto.membership import (
    ADD,
    CREATE,
    FIRST_ACTIONS,
    LEAVE,
    Head,
    MembershipError,
    describe,
    extend,
    sign_change,
    start,
)
from spartan.crypto.pairwise import KeyDeleted
from spartan.crypto.prekeys import WINDOW_DAYS
from spartan.crypto.sender_keys import (
    MembershipView,
    SenderKey,
    SenderKeyRing,
    decrypt_group,
    encrypt_group,
    envelope_view,
    open_sender_key,
    seal_sender_key,
)
from spartan.errors import SpartanError
from spartan.v1 import pb

Warn = Callable[[str], None]

OK, NO_KEY, FORGED = "", "no_key", "forged"
# A sender ahead of me may only be quicker: wait out the gateways' membership cache (5 s) before saying
# the server withholds the change.
WITHHELD_GRACE_SECONDS = 6.0


@dataclass(frozen=True)
class GroupOpened:
    """The outcome of opening a group message: `text`, or None with the reason in `problem`."""

    text: str | None
    problem: str = OK  # NO_KEY: this device never got the key (yet); FORGED: it failed verification


class ClientGroups:
    def __init__(self, crypto: ClientCrypto, api: GatewayApi, warn: Warn, state: ClientState | None = None) -> None:
        self.crypto = crypto
        self.me = crypto.user
        self.api = api
        self.warn = warn  # also shows each verified change: "bob added eve to group1."
        self.state = state if state is not None else ClientState()
        self.ring = SenderKeyRing(self.me, clock=crypto.wall_clock)  # own keys are replaced daily
        self.info: dict[str, pb.GroupInfo] = {}  # newest membership the server listed per group
        self.heads: dict[str, Head] = {
            group: Head(group, version, bytes.fromhex(digest), frozenset(members))
            for group, (version, digest, members) in self.state.heads.items()
        }
        self.owed: dict[str, set[str]] = defaultdict(set)  # members who had no keys when my key went out
        self._undistributed: set[str] = set()  # groups whose current key may not have reached everyone
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._told: set[tuple[str, str, int]] = set()  # warnings given once: (group, what, version)
        self._checks: dict[tuple[str, int], asyncio.Task[None]] = {}  # (group, version) a sender showed ahead of me

    # ----------------------------------------------------------- membership
    def verified(self, group: str) -> frozenset[str]:
        """The members the chain of signed changes this client checked says `group` has."""
        head = self.heads.get(group)
        return head.members if head is not None else frozenset()

    def members(self, group: str) -> list[str]:
        """Who gets my keys: verified members the server also lists (it refuses keys for others)."""
        info = self.info.get(group)
        listed = set(info.members) if info is not None else set()
        return sorted(self.verified(group) & listed)

    async def refresh(self, group: str) -> pb.GroupInfo:
        """Ask the server for the group's members and chain (NOT_FOUND / PERMISSION_DENIED propagate)."""
        info = await self.api.get_group(pb.GroupRequest(group=group))
        await self.apply(info)
        return self.info[group]

    async def on_membership(self, message: pb.Message) -> bool:
        """Apply a MEMBERSHIP message; True if it verified a change this client had not seen.

        A message without a record, or one that does not follow the head (changes were
        missed), makes the client fetch the whole chain; a change the chain does not
        hold is then refused, and members it would add get no key.
        """
        info = pb.GroupInfo(group=message.group, members=message.members, version=message.version)
        head = self.heads.get(message.group)
        if message.HasField("change"):
            info.chain.append(message.change)
            follows = message.change.action == CREATE if head is None else message.change.version <= head.version + 1
        else:
            follows = head is not None and message.version <= head.version
        if not follows:
            try:
                await self.refresh(message.group)
            except SpartanError:
                pass  # not a member any more (or the server is away): the record itself may still tell
        await self.apply(info)  # also when refreshed: the gateway's answer may predate this message
        return self.heads.get(message.group) != head

    async def apply(self, info: pb.GroupInfo) -> bool:
        """Verify the changes `info` brings; on a verified change rotate my key and send it to verified members."""
        group = info.group
        async with self._locks[group]:
            known = self.info.get(group)
            if known is None or info.version >= known.version:
                self.info[group] = info
            before = self.heads.get(group)
            head = await self._verify(group, info.chain)
            self._flag_unverified(group)
            if head is None or head == before:
                return False
            self.state.record_head(group, head.version, head.digest.hex(), sorted(head.members))
            if self.me not in head.members:
                self.ring.forget_group(group)
                self.owed.pop(group, None)
                self._undistributed.discard(group)
                return True
            fresh = self.ring.on_membership(group, head.version, head.members)
            if fresh is not None:
                await self._distribute_quietly(group, fresh)
            return True

    async def _verify(self, group: str, chain: Iterable[pb.MembershipRecord]) -> Head | None:
        """Move the head along every record that extends it; say why at the first that does not."""
        head = self.heads.get(group)
        for record in sorted(chain, key=lambda r: r.version):
            if head is not None and record.version <= head.version:
                continue
            if head is None and record.action not in FIRST_ACTIONS:
                break  # only part of the chain (a change announced before GetGroup shows it): judged later
            try:
                key = (await self.crypto.peer_keys(record.actor)).identity_key if record.actor else None
            except PeerHasNoKeys:
                key = None
            except SpartanError:
                break  # the actor's key cannot be fetched now: the next refresh checks again
            try:
                head = start(record, key) if head is None else extend(head, record, key)
            except MembershipError as refused:
                self._tell(group, "refused", record.version, f"A change of {group} was refused: {refused}.")
                break
            self.heads[group] = head
            self.warn(describe(record))
        return head

    def _flag_unverified(self, group: str) -> None:
        head, info = self.heads.get(group), self.info.get(group)
        if head is None or info is None or self.me not in head.members:
            return
        for member in sorted(set(info.members) - head.members):
            self._tell(
                group,
                member,
                info.version,
                f"The server lists {member} in {group} without a change signed by a member; "
                f"{member} gets no key from you.",
            )

    def _tell(self, group: str, what: str, version: int, text: str) -> None:
        if (group, what, version) not in self._told:
            self._told.add((group, what, version))
            self.warn(text)

    async def change(self, action: str, group: str, member: str = "", members: Iterable[str] = ()) -> pb.GroupInfo:
        """Make a membership change: sign its record on top of my verified head and send it.

        `action` is CREATE (with `members`), ADD, REMOVE or LEAVE; gRPC errors propagate.
        """
        if action == CREATE:
            listed = list(members)
            record = sign_change(self.crypto.identity, None, CREATE, "", group=group, members=listed)
            info = await self.api.create_group(pb.GroupRequest(group=group, members=listed, change=record))
        else:
            await self.refresh(group)  # sign on top of the newest change there is (presence refuses older)
            if action == LEAVE:
                member = self.me
            record = sign_change(self.crypto.identity, self.heads.get(group), action, member, group=group)
            change = self.api.add_member if action == ADD else self.api.remove_member
            info = await change(pb.GroupRequest(group=group, user="" if action == LEAVE else member, change=record))
        info.chain.append(record)
        await self.apply(info)
        return info

    # ---------------------------------------------------------- distribution
    async def _distribute_quietly(self, group: str, key: SenderKey) -> None:
        """Distribute after a membership change; on failure the next send tries again."""
        try:
            await self._distribute(group, key)
        except SpartanError as exc:
            self.warn(f"Could not send your new key for {group} yet ({exc.message}); will retry on your next message.")

    async def _distribute(self, group: str, key: SenderKey, only: set[str] | None = None) -> None:
        self._undistributed.add(group)
        recipients = [m for m in self.members(group) if m != self.me and (only is None or m in only)]
        sealed: list[pb.Message] = []
        missing: set[str] = set()
        for member in recipients:
            try:
                cipher = await self.crypto.cipher_for(member)
            except PeerHasNoKeys:
                missing.add(member)  # sent when their key shows up (KEY_UPDATE)
                continue
            message_id = uuid.uuid4().hex
            sealed.append(
                pb.Message(id=message_id, recipient=member, body=seal_sender_key(cipher, key, message_id=message_id))
            )
        if sealed:
            await self.api.send_sender_keys(pb.SenderKeyBatch(group=group, keys=sealed))
        if only is None:
            self.owed[group] = missing
            self._undistributed.discard(group)
        else:
            self.owed[group] = (self.owed[group] - only) | missing

    async def on_peer_keys(self, peer: str) -> None:
        """A user registered keys: send them my key for every group that still owes it to them."""
        for group, waiting in list(self.owed.items()):
            key = self.ring.own_key(group)
            if peer in waiting and key is not None:
                async with self._locks[group]:
                    try:
                        await self._distribute(group, key, only={peer})
                    except SpartanError as exc:
                        self.warn(f"Could not send your key for {group} to {peer}: {exc.message}")

    async def on_sender_key(self, message: pb.Message) -> bool:
        """Take a SENDER_KEY addressed to me; True if it is a key I did not have."""
        group, sender = message.group, message.sender
        if not group or message.recipient != self.me or sender == self.me:
            return False
        if sender not in self.verified(group):
            try:
                await self.refresh(group)  # a change adding them may be on its way: check the chain once
            except SpartanError:
                return False
        members = self.verified(group)
        if self.me not in members or sender not in members:
            return False
        try:
            cipher = self.crypto.ciphers.get(sender, await self.crypto.peer_keys(sender))
            key = open_sender_key(cipher, message.body, message_id=message.id, group=group)
        except KeyDeleted:
            self.warn(
                f"A key from {sender} for {group} cannot be opened: the prekey it was sealed to is not on this "
                f"device (deleted after {WINDOW_DAYS} days for forward secrecy, or made by another device)."
            )
            return False
        except (DecryptError, PeerHasNoKeys):
            self.warn(f"A key from {sender} for {group} could not be verified and was ignored.")
            return False
        except SpartanError:
            return False
        return self.ring.add(key)

    # -------------------------------------------------------------- messages
    async def seal(self, group: str, text: str, message_id: str) -> bytes:
        """Encrypt one group message under my current key, distributing a new key first if needed."""
        if group not in self.info or self.me not in self.verified(group):
            await self.refresh(group)
        head = self.heads.get(group)
        if head is None or self.me not in head.members:
            raise MembershipError(f"no change signed by a member makes you a member of {group}")
        async with self._locks[group]:
            key, fresh = self.ring.ensure_own_key(group, head.version)
            if fresh or group in self._undistributed:
                await self._distribute(group, key)
        view = MembershipView(head.version, head.digest)
        return encrypt_group(
            self.crypto.identity, key, text.encode("utf-8"), message_id=message_id, group=group, view=view
        )

    async def open(self, message: pb.Message) -> GroupOpened:
        """Verify and decrypt a group message; never raises."""
        try:
            key = self.ring.key_for(message.group, message.sender, message.body)
        except DecryptError:
            return GroupOpened(None, FORGED)
        if key is None:
            return GroupOpened(None, NO_KEY)
        try:
            identity_key = (await self.crypto.peer_keys(message.sender)).identity_key
            plain = decrypt_group(
                message.body,
                sender_identity_key=identity_key,
                sender_key=key,
                message_id=message.id,
                group=message.group,
            )
            self._compare_view(message.group, message.sender, envelope_view(message.body))
            return GroupOpened(plain.decode("utf-8"))
        except (DecryptError, PeerHasNoKeys, UnicodeDecodeError):
            return GroupOpened(None, FORGED)
        except SpartanError:
            return GroupOpened(None, NO_KEY)

    # ------------------------------------------------------- withheld changes
    def _compare_view(self, group: str, sender: str, view: MembershipView | None) -> None:
        """Compare a sender's signed view of the group with mine: a fork or a change I was not shown shows."""
        head = self.heads.get(group)
        if view is None or head is None or view.version < head.version:
            return
        if view.version == head.version:
            if view.digest != head.digest:
                self._tell(
                    group,
                    "fork",
                    view.version,
                    f"{sender} was shown other changes of {group} than you: the server shows members different "
                    f"histories.",
                )
            return
        if (group, view.version) not in self._checks:
            check = asyncio.ensure_future(self._check_withheld(group, sender, view.version))
            self._checks[(group, view.version)] = check

    async def _check_withheld(self, group: str, sender: str, version: int) -> None:
        """Fetch the chain now and once more after the grace period; say so if the change is still missing."""
        for wait in (0.0, WITHHELD_GRACE_SECONDS):
            await asyncio.sleep(wait)
            try:
                await self.refresh(group)
            except SpartanError:
                pass
            head = self.heads.get(group)
            if head is not None and head.version >= version:
                return
        self._tell(
            group, "withheld", version, f"{sender} has seen a change of {group} that the server has not shown you."
        )

    def close(self) -> None:
        """Stop the checks still waiting (the connection is closing)."""
        for check in self._checks.values():
            check.cancel()
