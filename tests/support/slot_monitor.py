"""Every command a Redis executes, read off `MONITOR`, with the cluster slots its keys hash to.

A Redis Cluster refuses a script, a multi-key command, a MULTI/EXEC block or an
`SSUBSCRIBE` whose keys or shard channels are in more than one slot (a script's
`SPUBLISH` included), and copies every plain `PUBLISH` to every node. Watching a single `redis-server` while the real services run
shows which calls would be refused there, without a cluster: the keys of `EVAL`/`EVALSHA`
come from their key count, the keys of any other command from the server itself
(`COMMAND GETKEYS`), and the commands a script runs (MONITOR's `[0 lua]` lines) belong to
the script call printed just before them.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import ResponseError

_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b", b'"': b'"', b"\\": b"\\"}
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)", re.S)
NO_KEYS = {"multi", "exec", "discard", "watch", "unwatch", "monitor", "ping", "hello", "client", "select",
           "script", "info", "command", "time", "publish", "subscribe", "unsubscribe", "psubscribe",
           "punsubscribe", "quit", "readonly", "cluster", "flushall", "config"}
SHARD_CHANNELS = {"spublish": slice(1, 2), "ssubscribe": slice(1, None), "sunsubscribe": slice(1, None)}


def _unescape(token: bytes) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        return bytes([int(code[1:], 16)]) if code[:1] == b"x" and len(code) == 3 else _ESCAPES.get(code, code)

    return _ESCAPE.sub(one, token)


@dataclass
class Call:
    """One command as a client sent it, and what a script call ran inside."""

    client: str
    args: list[bytes]
    inner: list[list[bytes]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.args[0].decode().lower()


class SlotMonitor:
    """Records every command `redis` executes from `start()` until `stop()`."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.calls: list[Call] = []
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(b"MONITOR\r\n")
        assert (await reader.readline()).startswith(b"+OK")
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            head, _, rest = line.partition(b"] ")
            client = head.rsplit(b" ", 1)[-1].decode()
            args = [_unescape(token) for token in _TOKEN.findall(rest)]
            if not args:
                continue
            if client == "lua":
                if self.calls:
                    self.calls[-1].inner.append(args)
            else:
                self.calls.append(Call(client, args))

    async def stop(self) -> None:
        await asyncio.sleep(0.2)  # the last lines on their way
        assert self._task is not None and self._writer is not None
        self._task.cancel()
        self._writer.close()


async def keys_of(redis: Redis, args: list[bytes]) -> list[bytes]:
    """The key arguments of a command, as the server names them, and its shard channels (a cluster
    routes those by slot too; `COMMAND GETKEYS` does not name them)."""
    name = args[0].decode().lower()
    if name in ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall"):
        return args[3 : 3 + int(args[2])]
    if name in SHARD_CHANNELS:
        return args[SHARD_CHANNELS[name]]
    if name in NO_KEYS:
        return []
    try:
        return [key if isinstance(key, bytes) else key.encode() for key in await redis.command_getkeys(*args)]
    except ResponseError:
        return []  # a command without key arguments


def plain_publishes(calls: list[Call]) -> list[str]:
    """Every PUBLISH, from a client or a script: on a cluster it would be copied to every node."""
    found = [f"PUBLISH {call.args[1]!r}" for call in calls if call.name == "publish"]
    found += [f"PUBLISH {inner[1]!r} in {call.name}" for call in calls for inner in call.inner
              if inner[0].lower() == b"publish"]
    return found


async def cross_slot_calls(redis: Redis, calls: list[Call]) -> list[str]:
    """Each call (a script with what it ran, a multi-key command, a MULTI/EXEC block, a shard-channel
    subscription) whose keys and shard channels span slots."""
    found: list[str] = []
    blocks: dict[str, list[Call]] = {}
    for call in calls:
        if call.name == "multi":
            blocks[call.client] = []
            continue
        if call.name in ("exec", "discard"):
            block = blocks.pop(call.client, [])
            keys = [key for queued in block for key in await keys_of(redis, queued.args)]
            if len({key_slot(key) for key in keys}) > 1:
                found.append(f"MULTI of {[queued.name for queued in block]} over {keys}")
            continue
        if call.client in blocks:
            blocks[call.client].append(call)
            continue
        keys = await keys_of(redis, call.args)
        for inner in call.inner:
            keys += await keys_of(redis, inner)
        if len({key_slot(key) for key in keys}) > 1:
            found.append(f"{call.name} {call.args[1][:12]!r} over {keys}")
    return found
