"""How the terminal client shows group chats: opening a group, its lines, its history.

The group-key protocol is `spartan.client.groups.ClientGroups`; this view decides what
the user sees of it. A group message whose sender key has not arrived yet is parked
and shown when the key comes. The view changes the chat's state only through the
chat's own methods (`ChatSurface`), so it imports nothing of `spartan.client.chat`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container
from typing import Protocol

from spartan.client.groups import NO_KEY, ClientGroups, GroupOpened
from spartan.errors import SpartanError
from spartan.v1 import pb


class ChatSurface(Protocol):
    """What the view needs of the chat it is part of (`spartan.client.chat.Chat`)."""

    @property
    def me(self) -> str: ...

    @property
    def group(self) -> str:
        """The open group ("" when none is)."""

    @property
    def seen(self) -> Container[str]:
        """Ids already shown or sent."""

    def show(self, line: str) -> None: ...

    def notice(self, text: str) -> None: ...

    def remember(self, message_id: str) -> bool: ...

    async def recent(self, request: pb.HistoryRequest) -> list[pb.Message]: ...

    def wait_for_reader(self, message: pb.Message, source: str) -> None: ...

    async def enter_group(self, group: str, others: list[str]) -> None: ...

    def joined(self, group: str) -> None: ...

    def left(self, group: str) -> None: ...


class GroupChatView:
    def __init__(self, chat: ChatSurface, keys: ClientGroups) -> None:
        self.chat = chat
        self.keys = keys
        self.parked: dict[tuple[str, str], list[pb.Message]] = defaultdict(list)  # waiting for a sender key

    def line(self, message: pb.Message, text: str) -> str:
        return f"[{message.group}][{message.sender}] {text}"

    async def open(self, group: str) -> bool:
        """Make `group` the current conversation and show what is new in it."""
        try:
            await self.keys.refresh(group)
        except SpartanError as exc:
            self.chat.notice(f"Cannot open {group}: {exc.message}")
            return False
        others = sorted(self.keys.verified(group) - {self.chat.me})  # who signed changes say is in it
        await self.chat.enter_group(group, others)
        return True

    async def show_history(self, group: str) -> None:
        """`/history`: the recent messages the server's cache holds for `group`."""
        chat = self.chat
        unreadable = 0
        for message in await chat.recent(pb.HistoryRequest(group=group)):
            if message.sender == chat.me:
                continue
            opened = await self.keys.open(message)
            if opened.problem == NO_KEY:
                unreadable += 1
            else:
                self.display(message, opened)
        if unreadable:
            chat.notice(f"{unreadable} earlier message(s) in {group} were sent before you could read them.")

    async def show(self, message: pb.Message) -> None:
        """Show one group message that waited while another conversation was open."""
        if not self.chat.remember(message.id) or message.sender == self.chat.me:
            return
        await self._open_or_park(message)

    def display(self, message: pb.Message, opened: GroupOpened) -> None:
        if opened.text is None:
            self.chat.notice(f"A message from {message.sender} could not be decrypted.")
        else:
            self.chat.show(self.line(message, opened.text))

    # ------------------------------------------------------------ incoming
    async def on_chat(self, message: pb.Message) -> None:
        chat = self.chat
        if message.sender == chat.me or message.id in chat.seen:
            return
        if message.group != chat.group:
            chat.wait_for_reader(message, message.group)
            return
        chat.remember(message.id)
        await self._open_or_park(message)

    async def _open_or_park(self, message: pb.Message) -> None:
        opened = await self.keys.open(message)
        if opened.problem == NO_KEY:
            self.parked[(message.group, message.sender)].append(message)
        else:
            self.display(message, opened)

    async def on_sender_key(self, message: pb.Message) -> None:
        if not await self.keys.on_sender_key(message):
            return
        for parked in self.parked.pop((message.group, message.sender), []):
            opened = await self.keys.open(parked)
            if opened.problem == NO_KEY:
                self.parked[(message.group, message.sender)].append(parked)
            elif parked.group == self.chat.group:
                self.display(parked, opened)

    async def on_membership(self, message: pb.Message) -> None:
        """Verify the change (ClientGroups shows it, or says why it is refused) and follow what is verified."""
        await self.keys.on_membership(message)
        group = message.group
        if group not in self.keys.heads:
            return  # nothing verified: the server's word alone changes nothing here
        if self.chat.me in self.keys.verified(group):
            self.chat.joined(group)
        else:
            self.chat.left(group)
