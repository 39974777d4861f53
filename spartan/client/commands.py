"""Slash commands inside a chat: /help, /users, /switch, /history, /verify, /retry, /accept, /decline, /quit.

Group commands (/group, /groups, /members, /invite, /remove, /leave, /create) live in spartan.client.groups.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from spartan.client.chat import Chat
from spartan.client.groups import GROUP_COMMANDS, GROUP_HELP
from spartan.crypto.safety import format_rows
from spartan.v1 import pb

HELP = [
    "/users            who is online",
    "/switch USER      chat with someone else",
    "/history          recent messages of this conversation",
    "/accept USER      accept a chat request      /decline USER   decline it",
    "/verify USER      show the safety number to compare with USER; '/verify USER ok' marks it verified",
    "/retry            send the last message that could not be sent",
    *GROUP_HELP,
    "/quit             leave (Ctrl-D and Ctrl-C work too)",
]


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
        chat.notice(f"{name} failed: {exc.details()}")


async def _help(chat: Chat, args: list[str]) -> None:
    for line in HELP:
        chat.notice(line)


async def _users(chat: Chat, args: list[str]) -> None:
    listing = await chat.conn.call("ListUsers", pb.ListUsersRequest())
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
    if chat.group:
        chat.notice(f"Recent messages in {chat.group}:")
        await chat.group_view.show_history(chat.group)
        return
    chat.notice(f"Recent messages with {chat.peer}:")
    await chat.show_history(chat.peer)


async def _accept(chat: Chat, args: list[str]) -> None:
    if len(args) != 1 or args[0] not in chat.pending:
        chat.notice("Usage: /accept USER (someone who asked to chat with you)")
        return
    await chat.accept(args[0])


async def _decline(chat: Chat, args: list[str]) -> None:
    if len(args) != 1 or args[0] not in chat.pending:
        chat.notice("Usage: /decline USER (someone who asked to chat with you)")
        return
    await chat.decline(args[0])


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
    if chat.last_failed is None:
        chat.notice("Nothing to retry.")
        return
    peer, text = chat.last_failed
    if await chat.send(text, peer):
        chat.show(f"[{chat.me}] (resent) {text}")


async def _quit(chat: Chat, args: list[str]) -> None:
    raise Quit


COMMANDS: dict[str, Callable[[Chat, list[str]], Awaitable[None]]] = {
    "/help": _help, "/users": _users, "/switch": _switch, "/history": _history, "/accept": _accept,
    "/decline": _decline, "/verify": _verify, "/retry": _retry, "/quit": _quit, "/exit": _quit,
    **GROUP_COMMANDS,
}
