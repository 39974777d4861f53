"""Slash commands inside a chat: /help, /users, /switch, /history, /verify, /retry, /accept, /decline, /quit.

Group commands (/group, /groups, /members, /invite, /remove, /leave, /create) live in spartan.client.groups.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from spartan import naming
from spartan.client.chat import Chat
from spartan.client.explain import OUTAGE, action_failed, is_retryable, users_unreachable
from spartan.client.groups import GROUP_COMMANDS, GROUP_HELP
from spartan.crypto.safety import format_rows
from spartan.v1 import pb

HELP = [
    "/users            who is online",
    "/switch USER      chat with someone else",
    "/history          recent messages of this conversation",
    "/accept USER      accept a chat request      /decline USER   decline it",
    "/verify USER      show the safety number to compare with USER; '/verify USER ok' marks it verified",
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
    except grpc.aio.AioRpcError as exc:
        if is_retryable(exc):
            chat.retry_line = line.strip()
        chat.notice(action_failed(line.strip(), exc))


async def _help(chat: Chat, args: list[str]) -> None:
    for line in HELP:
        chat.notice(line)


async def _users(chat: Chat, args: list[str]) -> None:
    try:
        listing = await chat.conn.call("ListUsers", pb.ListUsersRequest())
    except grpc.aio.AioRpcError as exc:
        if exc.code() not in OUTAGE:
            raise
        chat.notice(users_unreachable())
        return
    shown = [f"{u.name} ({'online' if u.online else 'offline'})" for u in listing.users if u.name != chat.me]
    chat.notice("Users: " + ", ".join(shown))


async def _switch(chat: Chat, args: list[str]) -> None:
    if len(args) != 1:
        chat.notice("Usage: /switch USER")
        return
    if args[0] == chat.peer:
        chat.notice(f"You are already chatting with {chat.peer}.")
        return
    previous = chat.peer, chat.group
    chat.peer, chat.group = "", ""
    await chat.start_with(args[0])
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
    if not args or args[0] not in chat.users or args[0] == chat.me:
        chat.notice("Usage: /verify USER   then, once the numbers match on both screens: /verify USER ok")
        return
    peer = args[0]
    number = await chat.crypto.safety_number(peer)
    if len(args) > 1 and args[1].lower() in ("ok", "yes", "verified"):
        chat.crypto.pins.mark_verified(peer)
        chat.notice(f"{peer} is now marked as verified.")
        return
    state = "verified" if chat.crypto.pins.is_verified(peer) else "not verified yet"
    chat.notice(f"Safety number with {peer} ({state}); compare it with what {peer} sees:")
    for row in format_rows(number):
        chat.notice("    " + row)


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
    "/retry": _retry,
    "/quit": _quit,
    "/exit": _quit,
    **GROUP_COMMANDS,
}
