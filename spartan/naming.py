"""Names shared by every service: conversation ids and pub/sub channels (keys belong to the modules that own them).

Conversation ids are what clients and history use: `dm:<a>:<b>` with the two user
names sorted (so both sides name it the same), or `group:<name>`; `inbox:<user>` is
the delivery log of a user's control messages (chat requests, answers, membership).
Channels carry live deliveries, one per conversation in that conversation's cluster
slot: a user's inbox channel, each 1:1 conversation's, each group's (one publish
reaches every gateway holding a member). All are sharded pub/sub channels
(`SPUBLISH`/`SSUBSCRIBE`, Redis 7), on one Redis as on a cluster.
"""

from __future__ import annotations

DM_PREFIX = "dm:"
GROUP_PREFIX = "group:"
INBOX_PREFIX = "inbox:"


def dm_conversation(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"{DM_PREFIX}{first}:{second}"


def group_conversation(group: str) -> str:
    return f"{GROUP_PREFIX}{group}"


def dm_members(conversation: str) -> tuple[str, str] | None:
    """The two users of a 1:1 conversation id, or None if it is not one."""
    if not conversation.startswith(DM_PREFIX):
        return None
    parts = conversation[len(DM_PREFIX) :].split(":")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def group_name(conversation: str) -> str | None:
    if not conversation.startswith(GROUP_PREFIX) or len(conversation) == len(GROUP_PREFIX):
        return None
    return conversation[len(GROUP_PREFIX) :]


def inbox_conversation(user: str) -> str:
    return f"{INBOX_PREFIX}{user}"


def inbox_owner(conversation: str) -> str | None:
    if not conversation.startswith(INBOX_PREFIX) or len(conversation) == len(INBOX_PREFIX):
        return None
    return conversation[len(INBOX_PREFIX) :]


def conversation_channel(conversation: str) -> str:
    """The conversation's live channel, under its hash tag: the script that keeps a message in the
    conversation's delivery log publishes it there (`SPUBLISH` to a channel of the script's own slot)."""
    return f"sp:ch:{{{conversation}}}"


def user_channel(user: str) -> str:
    """The channel of the user's inbox: control messages and sealed sender keys for that user."""
    return conversation_channel(inbox_conversation(user))


def group_channel(group: str) -> str:
    return conversation_channel(group_conversation(group))


GROUP_CHANGES_CHANNEL = "sp:groups:changes"  # every membership change, for gateways' caches
BROADCAST_CHANNEL = "sp:broadcast"  # notices for every connected user (e.g. key registrations)
