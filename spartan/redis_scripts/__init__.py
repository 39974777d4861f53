"""Lua scripts shipped as `.lua` files next to this module, loaded once and called by SHA.

Each script file starts with a header comment stating its `KEYS[n]`, `ARGV[n]` and return
value. `script(redis, name)` returns a redis-py `AsyncScript`: it calls EVALSHA and,
on NOSCRIPT (a restarted or flushed Redis), loads the source again and retries, so a
Redis restart never breaks a caller.
"""
from __future__ import annotations

from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


INCLUDE = "--!include "


@cache
def source(name: str) -> str:
    """The text of `<name>.lua`, with each `--!include _part` line replaced by `_part.lua`.

    Redis scripts cannot load modules, so helpers shared by several scripts (such as
    the protobuf varint encoder) live once in an `_`-prefixed fragment and are pasted
    in here, before the script is loaded and hashed.
    """
    text = resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return "".join(source(line[len(INCLUDE):].strip()) if line.startswith(INCLUDE) else line
                   for line in text.splitlines(keepends=True))


def script(redis: Redis, name: str) -> AsyncScript:
    """A callable script bound to `redis`; call it as `await s(keys=[...], args=[...])`."""
    return redis.register_script(source(name))
