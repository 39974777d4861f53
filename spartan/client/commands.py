"""Slash commands inside a chat: /help, /users, /switch, /history, /verify, /accept-key, /retry, /accept,
/decline, /quit.

Group commands (/group, /groups, /members, /invite, /remove, /leave, /create) live in spartan.client.groups.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from spartan import naming
from spartan.client.chat import Chat
from spartan.client.e2e import PeerHasNoKeys
from spartan.client.explain import OUTAGE, action_failed, is_retryable, users_unreachable
from spartan.client.group_commands import GROUP_COMMANDS, GROUP_HELP, one_other_name
from spartan.crypto.pins import PinConflict
from spartan.crypto.safety import format_rows
from spartan.errors import SpartanError
from spartan.v1 import pb

HELP = [
    "/users            who is online",
    "/switch USER      chat with someone else",
    "/history          recent messages of this conversation",
    "/accept USER      accept a chat request      /decline USER   decline it",
    "/verify USER      show the safety number to compare with USER; '/verify USER ok' marks that number verified",
    "/accept-key USER  use USER's new key after a key change warning (nothing is sent to USER until then)",
    "/retry            do again the last command the rate limit or an outage stopped (e.g. /leave group1)",
    *GROUP_HELP,
    "/quit             leave (Ctrl-D and Ctrl-C work too)",
    "Prompt: [you] > in a chat with one person, [group] you > in a group: a line goes where the prompt says.",
    "Sending: lines leave in the order typed. Over the rate limit they wait in a queue (one status line counts",
    "  them down); nothing is dropped. Quitting keeps unsent lines and the next start sends them.",
    "Paste: pasting several lines sends one message per line, in order, through the same queue.",
]


HISTORY_SETTLE_SECONDS = 5.0  # longest /history waits for lines that can be sent at once


class Quit(Exception):
    """The user asked to leave."""


async def run_command(chat: Chat, line: str) -> None:
    name, *args = line.strip().split()
    handler = COMMANDS.get(name.lower())
    if handler is None:
        chat.notice(f"Unknown command {name}. Type /help for the list.")
        return
    try:
        await handler(chat, args)
    except SpartanError as exc:
        if is_retryable(exc):
            chat.retry_line = line.strip()
        chat.notice(action_failed(line.strip(), exc))


async def _help(chat: Chat, args: list[str]) -> None:
    for line in HELP:
        chat.notice(line)


async def _users(chat: Chat, args: list[str]) -> None:
    try:
        listing = await chat.api.list_users(pb.ListUsersRequest())
    except SpartanError as exc:
        if exc.code not in OUTAGE:
            raise
        chat.notice(users_unreachable())
        return
    shown = [f"{u.name} ({'online' if u.online else 'offline'})" for u in listing.users if u.name != chat.me]
    chat.notice("Users: " + ", ".join(shown))


async def _switch(chat: Chat, args: list[str]) -> None:
    peer = one_other_name(chat, args, "/switch USER", chat.peer, f"You are already chatting with {chat.peer}.")
    if not peer:
        return
    previous = chat.peer, chat.group
    chat.peer, chat.group = "", ""
    await chat.start_with(peer)
    if not (chat.peer or chat.group):
        chat.peer, chat.group = previous


async def _history(chat: Chat, args: list[str]) -> None:
    """Recent messages from the server, after what can be sent now left; then what still waits to be sent."""
    await chat.outgoing.settle(HISTORY_SETTLE_SECONDS)
    if chat.group:
        chat.notice(f"Recent messages in {chat.group}:")
        await chat.group_view.show_history(chat.group)
    else:
        chat.notice(f"Recent messages with {chat.peer}:")
        await chat.show_history(chat.peer)
    target = naming.group_conversation(chat.group) if chat.group else chat.peer
    for to, text in chat.outgoing.state.outbox.values():
        if to == target:
            chat.show(f"[{chat.me}] (not sent yet) {text}")


def _asked(chat: Chat, args: list[str], command: str) -> str:
    """The requester named in /accept or /decline, or "" after saying why there is none."""
    if len(args) != 1:
        chat.notice(f"Usage: {command} USER (someone who asked to chat with you)")
        return ""
    name = args[0]
    if name in chat.pending:
        return name
    waiting = f"waiting requests: {', '.join(chat.pending)}" if chat.pending else "nobody is waiting for an answer"
    if name in chat.users and name != chat.me:
        chat.notice(
            f"{name} has not asked to chat with you ({waiting}); to start a chat with {name}, type /switch {name}."
        )
    else:
        chat.notice(f"{name} has not asked to chat with you ({waiting}).")
    return ""


async def _accept(chat: Chat, args: list[str]) -> None:
    if name := _asked(chat, args, "/accept"):
        await chat.accept(name)


async def _decline(chat: Chat, args: list[str]) -> None:
    if name := _asked(chat, args, "/decline"):
        await chat.decline(name)


async def _verify(chat: Chat, args: list[str]) -> None:
    """`/verify USER` fetches USER's keys and shows the number of the pinned key (remembered);
    `/verify USER ok` marks exactly that key verified, without fetching anything."""
    confirm = len(args) == 2 and args[1].lower() in ("ok", "yes", "verified")
    if not (len(args) == 1 or confirm) or args[0] not in chat.users or args[0] == chat.me:
        chat.notice("Usage: /verify USER   then, once the numbers match on both screens: /verify USER ok")
        return
    peer, crypto = args[0], chat.crypto
    if confirm:
        shown = crypto.shown.pop(peer, None)
        if shown is None:
            chat.notice(f"Type /verify {peer} first and compare the number it shows; then /verify {peer} ok.")
        elif peer in crypto.offered or crypto.pins.pinned_key(peer) != shown:
            current = crypto.offered[peer].identity_key if peer in crypto.offered else crypto.pins.pinned_key(peer)
            chat.notice(f"{peer}'s key changed after /verify showed you its number, so nothing was marked verified.")
            _show_number(chat, crypto.number(peer, current or shown), f"{peer}'s new safety number:")
        else:
            crypto.pins.mark_verified(peer, shown)
            chat.notice(f"{peer} is now marked as verified (the number /verify {peer} showed you).")
        return
    try:
        await crypto.fetch_now(peer)
    except PeerHasNoKeys:
        chat.notice(f"{peer} has no keys yet (never logged in); there is no number to compare.")
        return
    if peer in crypto.offered:
        crypto.shown.pop(peer, None)
        chat.notice(f"{peer}'s key has changed and you have not accepted the new one; nothing is sent to {peer}.")
        _show_number(chat, crypto.number(peer, crypto.offered[peer].identity_key), "New safety number:")
        chat.notice(f"If {peer} sees the same, type /accept-key {peer}.")
        return
    identity_key = crypto.keys[peer].identity_key
    crypto.shown[peer] = identity_key
    state = "verified" if crypto.pins.is_verified(peer) else "not verified yet"
    title = f"Safety number with {peer} ({state}); compare it with what {peer} sees:"
    _show_number(chat, crypto.number(peer, identity_key), title)


def _show_number(chat: Chat, number: str, title: str) -> None:
    chat.notice(title)
    for row in format_rows(number):
        chat.notice("    " + row)


async def _accept_key(chat: Chat, args: list[str]) -> None:
    if len(args) != 1:
        chat.notice("Usage: /accept-key USER (after a warning that USER's key changed)")
        return
    peer = args[0]
    if peer not in chat.crypto.offered:
        chat.notice(f"{peer} has no new key waiting for you to accept.")
        return
    try:
        await chat.accept_key(peer)
    except PinConflict as exc:
        chat.notice(f"Refused: {exc.message}.")


async def _retry(chat: Chat, args: list[str]) -> None:
    """Run again the command the rate limit or an outage stopped; messages need no /retry (they queue)."""
    line, chat.retry_line = chat.retry_line, None
    if line is None:
        waiting = chat.outgoing.unsent()
        queued = f"; your {waiting} waiting message(s) go out by themselves" if waiting else ""
        chat.notice(f"Nothing to retry{queued}.")
        return
    chat.notice(f"Retrying {line}")
    await run_command(chat, line)


async def _quit(chat: Chat, args: list[str]) -> None:
    raise Quit


COMMANDS: dict[str, Callable[[Chat, list[str]], Awaitable[None]]] = {
    "/help": _help,
    "/users": _users,
    "/switch": _switch,
    "/history": _history,
    "/accept": _accept,
    "/decline": _decline,
    "/verify": _verify,
    "/accept-key": _accept_key,
    "/retry": _retry,
    "/quit": _quit,
    "/exit": _quit,
    **GROUP_COMMANDS,
}
