"""Lua scripts shipped as `.lua` files next to this module, loaded once and called by SHA.

Each script file starts with a header comment stating its `KEYS[n]`, `ARGV[n]` and return
value. `script(redis, name)` returns a callable script: it calls EVALSHA and, on
NOSCRIPT (a restarted or flushed Redis), loads the source again and retries, so a
Redis restart never breaks a caller. Bound to a `Redis` client it is redis-py's
`AsyncScript` (one pooled connection per call); bound to an `AutoPipeline` it shares
that pipeline's connection with every other concurrent call (the send path's scripts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from spartan.redis_pipeline import AutoPipeline

INCLUDE = "--!include "


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def expand(name: str, read: Callable[[str], str] = _read, included: set[str] | None = None) -> str:
    """`read(name)` with each `--!include _part` line replaced by `_part`'s text, once per script.

    A fragment that two includes (or a fragment and the script) both ask for is pasted
    at its first include only: a second copy would redefine its locals, and Lua allows
    at most 200 locals in one chunk.
    """
    included = set() if included is None else included
    pieces = []
    for line in read(name).splitlines(keepends=True):
        if not line.startswith(INCLUDE):
            pieces.append(line)
            continue
        part = line[len(INCLUDE) :].strip()
        if part not in included:
            included.add(part)
            pieces.append(expand(part, read, included))
    return "".join(pieces)


@cache
def source(name: str) -> str:
    """The text of `<name>.lua` with its fragments pasted in, as loaded and hashed.

    Redis scripts cannot load modules, so helpers shared by several scripts (such as
    the protobuf varint encoder) live once in an `_`-prefixed fragment.
    """
    return expand(name)


class PipelinedScript:
    """A script run through an `AutoPipeline`; called like redis-py's `AsyncScript`."""

    def __init__(self, pipeline: AutoPipeline, text: str) -> None:
        self.pipeline = pipeline
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self.pipeline.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.pipeline.execute("SCRIPT", "LOAD", self.text)
            return await self.pipeline.execute("EVALSHA", self.sha, len(keys), *keys, *args)


def script(redis: Redis | AutoPipeline, name: str) -> AsyncScript | PipelinedScript:
    """A callable script bound to `redis`; call it as `await s(keys=[...], args=[...])`."""
    if isinstance(redis, AutoPipeline):
        return PipelinedScript(redis, source(name))
    return redis.register_script(source(name))
