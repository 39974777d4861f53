"""The key inbox: sealed group sender keys kept per recipient in Redis until their stream needs them.

1:1 history keeps only a few messages per conversation, so sender keys do not travel
through it: each sealed key is pushed to a small list per (recipient, group, sender)
holding the newest few, indexed per recipient, and published to the recipient's
channel. A stream that opens replays the inbox of the groups its user is in, so a
member who was offline through any number of messages still gets every key.
"""

from __future__ import annotations

import time
from collections.abc import Collection

from redis.asyncio import Redis

from spartan import naming
from spartan.errors import FailedPrecondition, InvalidArgument
from spartan.metrics import MESSAGES_SENT
from spartan.redis_conn import text
from spartan.v1 import pb
from spartan.validation import check_body, check_message_id, check_user

SENDER_KEYS_KEPT = 8  # per (recipient, group, sender): as many as a client's SenderKeyRing keeps


def sender_key_index(recipient: str) -> str:
    """Set of the recipient's sender-key inbox lists (one per group and sender)."""
    return f"sp:sk:{{{recipient}}}:index"


def sender_key_inbox(recipient: str, group: str, sender: str) -> str:
    """List of the newest sealed sender keys `sender` sent `recipient` for `group`, newest first.

    Names never contain ':' (see NAME_PATTERN), so these keys cannot collide.
    """
    return f"sp:sk:{{{recipient}}}:{group}:{sender}"


class SenderKeyInbox:
    def __init__(self, redis: Redis, users: Collection[str], max_message_bytes: int) -> None:
        self.redis = redis
        self.users = users
        self.max_message_bytes = max_message_bytes

    async def store(
        self, user: str, group: str, members: set[str], keys: list[pb.Message], *, batch: bool = False
    ) -> int:
        """Keep each of `user`'s sealed keys for its recipient and publish it; returns the time stamp (µs)."""
        sent_at_us = time.time_ns() // 1000
        stored: list[tuple[str, bytes]] = []
        for index, key in enumerate(keys):
            where = f"keys[{index}]." if batch else ""  # the field at fault: in SendSenderKeys' list, or SendMsg's
            check_message_id(key.id, field=where + "id")
            check_body(key.body, self.max_message_bytes, field=where + "body")
            recipient = check_user(key.recipient, self.users, "recipient", field=where + "recipient")
            if recipient == user:
                raise InvalidArgument("your own sender key is not sent to yourself")
            if recipient not in members:
                raise FailedPrecondition(f"{recipient} is not a member of {group}")
            message = pb.Message(
                id=key.id,
                kind=pb.SENDER_KEY,
                sender=user,
                recipient=recipient,
                group=group,
                body=key.body,
                conversation=naming.group_conversation(group),
                sent_at_us=sent_at_us,
            )
            stored.append((recipient, message.SerializeToString()))
        async with self.redis.pipeline(transaction=False) as pipe:
            for recipient, raw in stored:
                inbox = sender_key_inbox(recipient, group, user)
                pipe.lpush(inbox, raw)
                pipe.ltrim(inbox, 0, SENDER_KEYS_KEPT - 1)
                pipe.sadd(sender_key_index(recipient), inbox)
                pipe.spublish(naming.user_channel(recipient), raw)
            await pipe.execute()
        MESSAGES_SENT.labels("sender_key").inc(len(stored))
        return sent_at_us

    async def pending(self, user: str, groups: list[str]) -> list[bytes]:
        """The sealed sender keys kept for `user` in the groups they belong to, oldest first per sender."""
        prefixes = tuple(sender_key_inbox(user, group, "") for group in groups)
        inboxes = sorted(text(name) for name in await self.redis.smembers(sender_key_index(user)))
        inboxes = [name for name in inboxes if name.startswith(prefixes)] if prefixes else []
        if not inboxes:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for inbox in inboxes:
                pipe.lrange(inbox, 0, -1)
            lists = await pipe.execute()
        return [raw for newest_first in lists for raw in reversed(newest_first)]
