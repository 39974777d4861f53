"""Reading (and, as an attacker with access to Redis would, altering) what the servers stored."""
from __future__ import annotations

import redis as redis_sync

from spartan.delivery_log import conversation_keys as delivery_keys
from spartan.history_store import KEY_PREFIX
from spartan.v1 import pb


def redis_dump(url: str) -> list[bytes]:
    """Every key and every value of every type in every database, plus each key's DUMP."""
    client = redis_sync.Redis.from_url(url)
    found: list[bytes] = []
    try:
        databases = [int(name[2:]) for name in client.info("keyspace")] or [0]
        for db in databases:
            client.execute_command("SELECT", db)
            for key in client.scan_iter(count=1000):
                found.append(key)
                kind = client.type(key).decode()
                if kind == "string":
                    found.append(client.get(key) or b"")
                elif kind == "list":
                    found.extend(client.lrange(key, 0, -1))
                elif kind == "hash":
                    for field, value in client.hgetall(key).items():
                        found += [field, value]
                elif kind == "set":
                    found.extend(client.smembers(key))
                elif kind == "zset":
                    found.extend(member for member, _ in client.zrange(key, 0, -1, withscores=True))
                elif kind == "stream":
                    for entry_id, fields in client.xrange(key, "-", "+"):
                        found.append(entry_id)
                        for field, value in fields.items():
                            found += [field, value]
                else:
                    raise AssertionError(f"unexpected Redis type {kind} of {key!r}")
                found.append(client.dump(key) or b"")
    finally:
        client.close()
    return found


def stored_messages(url: str, conversation: str) -> list[pb.Message]:
    client = redis_sync.Redis.from_url(url)
    try:
        return [pb.Message.FromString(raw) for raw in client.lrange(f"{KEY_PREFIX}log:{conversation}", 0, -1)]
    finally:
        client.close()


def delivered_messages(url: str, conversation: str) -> list[pb.Message]:
    """What the delivery log keeps of `conversation` (the messages not yet acknowledged by every reader)."""
    client = redis_sync.Redis.from_url(url)
    try:
        return [pb.Message.FromString(raw) for raw in client.lrange(delivery_keys(conversation)[1], 0, -1)]
    finally:
        client.close()


def flip_stored_body(url: str, conversation: str, index: int) -> pb.Message:
    """Flip one bit in the ciphertext of a stored entry, in place, in both stores that keep it
    (the recent-history cache and the delivery log); returns the altered history entry."""
    client = redis_sync.Redis.from_url(url)
    try:
        altered = []
        for log_key in (f"{KEY_PREFIX}log:{conversation}", delivery_keys(conversation)[1]):
            message = pb.Message.FromString(client.lindex(log_key, index))
            body = bytearray(message.body)
            body[len(body) // 2] ^= 0x01
            message.body = bytes(body)
            client.lset(log_key, index, message.SerializeToString())
            altered.append(message)
        return altered[0]
    finally:
        client.close()
