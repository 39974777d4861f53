"""The group commands of the terminal client: /group, /groups, /members, /add, /remove, /leave, /create.

Membership commands act on the group named, else on the one shown in the prompt; each
change is signed here (`ClientGroups.change`) and refused with a sentence when it cannot
be (no verified membership to sign on top of), or kept for /retry when the rate limit or
an outage stops it (`Chat.attempt`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from spartan.client.chat import Chat
from spartan.crypto.membership import ADD, CREATE, LEAVE, REMOVE, MembershipError
from spartan.v1 import pb


def one_other_name(chat: Chat, args: list[str], usage: str, current: str, already: str) -> str:
    """The one name a command takes, unless it is missing, one too many, or the chat already open ("")."""
    if len(args) != 1:
        chat.notice(f"Usage: {usage}")
        return ""
    if args[0] == current:
        chat.notice(already)
        return ""
    return args[0]


async def _group(chat: Chat, args: list[str]) -> None:
    group = one_other_name(
        chat, args, "/group NAME   (your groups: /groups)", chat.group, f"You are already in {chat.group}."
    )
    if group:
        await chat.group_view.open(group)


async def _groups(chat: Chat, args: list[str]) -> None:
    listing = await chat.api.list_users(pb.ListUsersRequest())
    chat.groups = list(listing.groups)
    chat.notice("Your groups: " + (", ".join(chat.groups) if chat.groups else "none yet (/create NAME USER...)"))


def _target_group(chat: Chat, named: list[str], usage: str) -> str:
    """The group a membership command acts on: the one named, else the one shown in the prompt."""
    if named:
        return named[0]
    if not chat.group:
        chat.notice(f"You are not in a group chat: name the group ({usage}) or open one with /group NAME.")
    return chat.group


async def _members(chat: Chat, args: list[str]) -> None:
    group = _target_group(chat, args[:1], "/members GROUP")
    if group:
        keys = chat.group_keys
        await keys.refresh(group)
        verified = sorted(keys.verified(group))  # the server's list may hold members no one added: they are flagged
        chat.notice(f"Members of {group}: {', '.join(verified) if verified else 'none that a signed change shows'}")


async def _change_member(chat: Chat, args: list[str], action: str, command: str) -> None:
    """/add USER [GROUP] and /remove USER [GROUP]: one signed membership change, in the group named or shown."""
    if len(args) not in (1, 2):
        chat.notice(f"Usage: {command} USER [GROUP] (without GROUP: the group shown in the prompt)")
        return
    group = _target_group(chat, args[1:], f"{command} {args[0]} GROUP")
    if group:
        await _attempt_change(chat, f"{command} {args[0]} {group}", chat.group_keys.change(action, group, args[0]))


async def _attempt_change(chat: Chat, action: str, change: Awaitable[pb.GroupInfo]) -> pb.GroupInfo | None:
    """`chat.attempt` for a signed change, which may also fail here: no verified membership to sign on top of."""

    async def signed() -> pb.GroupInfo | None:
        try:
            return await change
        except MembershipError as exc:  # said here: it is not the server's answer, and /retry cannot help
            chat.notice(f"{action} was not done: {exc.message}.")
            return None

    return await chat.attempt(action, signed())


async def _add(chat: Chat, args: list[str]) -> None:
    await _change_member(chat, args, ADD, "/add")


async def _remove(chat: Chat, args: list[str]) -> None:
    await _change_member(chat, args, REMOVE, "/remove")


async def _leave(chat: Chat, args: list[str]) -> None:
    group = _target_group(chat, args[:1], "/leave GROUP")
    if group:
        await _attempt_change(chat, f"/leave {group}", chat.group_keys.change(LEAVE, group))


async def _create(chat: Chat, args: list[str]) -> None:
    """Make a group and enter it, so the prompt shows where the next line goes."""
    if len(args) < 2:
        chat.notice("Usage: /create NAME USER [USER...]")
        return
    action = f"/create {' '.join(args)}"
    info = await _attempt_change(chat, action, chat.group_keys.change(CREATE, args[0], members=args[1:]))
    if info is None:
        return
    if info.group not in chat.groups:
        chat.groups.append(info.group)
    chat.notice(f"Created {info.group}.")
    await chat.group_view.open(info.group)


GROUP_HELP = [
    "/group NAME       chat in a group (typing a group's name where a user is asked works too)",
    "/groups           your groups     /members [GROUP]   who is in the group",
    "/add USER [GROUP]     add someone (/invite works too)   /remove USER [GROUP]   remove someone",
    "/leave [GROUP]    leave a group; without GROUP these act on the group shown in the prompt: [group1] you >",
    "/create NAME USER...  make a new group with those users and enter it",
]

GROUP_COMMANDS: dict[str, Callable[[Chat, list[str]], Awaitable[None]]] = {
    "/group": _group,
    "/groups": _groups,
    "/members": _members,
    "/add": _add,
    "/invite": _add,
    "/remove": _remove,
    "/leave": _leave,
    "/create": _create,
}
