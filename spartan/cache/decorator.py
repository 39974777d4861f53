"""`@lru_cache`: the project's own async-aware memoizing decorator (not `functools`).

    @lru_cache(maxsize=1024, ttl=30, name="group_members")
    async def members(group: str) -> tuple[str, ...]: ...

    members.invalidate("team")   # forget one entry (same arguments as a call)
    members.cache_clear()        # forget everything
    members.cache_info()         # CacheInfo(hits, misses, evictions, maxsize, currsize)

Why not functools: the services are async and replicated. This decorator
- shares one computation between concurrent callers of the same missing key (no
  thundering herd); the computation runs as its own task, so a caller that is
  cancelled does not cancel it for the others, and a failure is not cached. The
  caller that started it gets the function's return value; callers that joined it
  or hit the cache get `decode(encoded value)`, like any cache hit;
- stores entries in a pluggable `CacheBackend`: `MemoryBackend` (default, per
  process) or `RedisBackend` (shared by replicas) via `backend=functools.partial(
  RedisBackend, redis)` or a ready backend instance;
- converts values with `encode` / `decode` callables at the backend boundary (a
  Redis backend needs bytes: use JSON or protobuf, never pickle);
- counts `spartan_cache_hits_total`, `spartan_cache_misses_total` and
  `spartan_cache_evictions_total` labelled with the cache `name`.

Keys: by default `repr` of the positional and keyword arguments (for methods the
instance is the first argument, as with functools). Pass `key=` (same parameters as
the function, returns a str) when `repr` is not stable across processes, which a
shared Redis backend requires. An `invalidate` racing with an in-flight computation
wins: that computation's result is returned to its callers but not stored.

Plain (non-async) functions work with the in-process backend; they get no
single-flight sharing.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from spartan.cache.backend import MISSING, CacheBackend, CacheInfo
from spartan.cache.memory import MemoryBackend
from spartan.cache.metrics import CACHE_EVICTIONS, CACHE_HITS, CACHE_MISSES

KeyFunction = Callable[..., str]
BackendFactory = Callable[..., CacheBackend]


def default_key(*args: Any, **kwargs: Any) -> str:
    """`repr` of the arguments: stable for str/int/bytes/tuple arguments."""
    if not kwargs:
        return repr(args)
    return repr((args, sorted(kwargs.items())))


def _identity(value: Any) -> Any:
    return value


def lru_cache(
    maxsize: int = 128,
    ttl: float | None = None,
    backend: CacheBackend | BackendFactory | None = None,
    name: str | None = None,
    key: KeyFunction | None = None,
    *,
    encode: Callable[[Any], Any] = _identity,
    decode: Callable[[Any], Any] = _identity,
) -> Callable[[Callable[..., Any]], CachedFunction]:
    """Memoize an async (or plain) function in an exact LRU of `maxsize` entries.

    `ttl`: seconds an entry stays valid (None: until evicted or invalidated).
    `backend`: None for an in-process `MemoryBackend`; a `CacheBackend` instance (it
    keeps its own capacity and TTL: `maxsize`/`ttl` here are then unused); or a
    factory called as `factory(name=..., maxsize=..., ttl=...)`.
    `name`: the metrics label and Redis namespace (default: module.qualname).
    """

    def decorate(function: Callable[..., Any]) -> CachedFunction:
        cache_name = name or f"{function.__module__}.{function.__qualname__}"
        store = _make_backend(backend, cache_name, maxsize, ttl)
        return CachedFunction(function, store, name=cache_name, key=key or default_key, encode=encode, decode=decode)

    return decorate


def _make_backend(
    backend: CacheBackend | BackendFactory | None, name: str, maxsize: int, ttl: float | None
) -> CacheBackend:
    if backend is None:
        return MemoryBackend(maxsize=maxsize, ttl=ttl)
    if isinstance(backend, CacheBackend):
        return backend
    return backend(name=name, maxsize=maxsize, ttl=ttl)


class CachedFunction:
    """The decorated function: call it like the original; see the module docstring."""

    def __init__(
        self,
        function: Callable[..., Any],
        backend: CacheBackend,
        *,
        name: str,
        key: KeyFunction,
        encode: Callable[[Any], Any],
        decode: Callable[[Any], Any],
    ) -> None:
        self.__wrapped__ = function
        functools.update_wrapper(self, function)
        self.backend = backend
        self.name = name
        self._key = key
        self._encode = encode
        self._decode = decode
        self._is_async = inspect.iscoroutinefunction(function)
        if not self._is_async and not isinstance(backend, MemoryBackend):
            raise TypeError(f"{name}: a plain function can only use the in-process MemoryBackend")
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self._hits = self._misses = self._evictions = 0
        self._hit_counter = CACHE_HITS.labels(cache=name)
        self._miss_counter = CACHE_MISSES.labels(cache=name)
        self._eviction_counter = CACHE_EVICTIONS.labels(cache=name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._is_async:
            return self._call_async(args, kwargs)
        return self._call_sync(args, kwargs)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return BoundCachedFunction(self, instance)

    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        entry_key = self._key(*args, **kwargs)
        task = self._inflight.get(entry_key)
        if task is None:
            stored = await self.backend.get(entry_key)
            if stored is not MISSING:
                self._count_hit()
                return self._decode(stored)
            task = self._inflight.get(entry_key)  # someone may have started while we looked
        self._count_miss()
        if task is not None:  # join the computation another caller started
            _, encoded = await asyncio.shield(task)
            return self._decode(encoded)
        task = asyncio.ensure_future(self._compute(entry_key, args, kwargs))
        task.add_done_callback(_retrieve_exception)
        self._inflight[entry_key] = task
        value, _ = await asyncio.shield(task)
        return value

    async def _compute(self, entry_key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """(value, encoded value): the caller that started gets the value, joiners decode."""
        this_task = asyncio.current_task()
        try:
            value = await self.__wrapped__(*args, **kwargs)
            encoded = self._encode(value)
            if self._inflight.get(entry_key) is this_task:
                self._count_evictions(await self.backend.set(entry_key, encoded))
            return value, encoded
        finally:
            if self._inflight.get(entry_key) is this_task:
                del self._inflight[entry_key]

    def _call_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        assert isinstance(self.backend, MemoryBackend)
        entry_key = self._key(*args, **kwargs)
        stored = self.backend.get_now(entry_key)
        if stored is not MISSING:
            self._count_hit()
            return self._decode(stored)
        self._count_miss()
        value = self.__wrapped__(*args, **kwargs)
        self._count_evictions(self.backend.set_now(entry_key, self._encode(value)))
        return value

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        """Forget the entry these arguments would use (awaitable for async functions)."""
        entry_key = self._key(*args, **kwargs)
        self._inflight.pop(entry_key, None)
        if self._is_async:
            return self.backend.delete(entry_key)
        assert isinstance(self.backend, MemoryBackend)
        return self.backend.delete_now(entry_key)

    def cache_clear(self) -> Any:
        """Forget every entry (awaitable for async functions)."""
        self._inflight.clear()
        if self._is_async:
            return self.backend.clear()
        assert isinstance(self.backend, MemoryBackend)
        return self.backend.clear_now()

    def cache_info(self) -> CacheInfo:
        currsize = len(self.backend) if isinstance(self.backend, MemoryBackend) else None
        return CacheInfo(self._hits, self._misses, self._evictions, self.backend.maxsize, currsize)

    def _count_hit(self) -> None:
        self._hits += 1
        self._hit_counter.inc()

    def _count_miss(self) -> None:
        self._misses += 1
        self._miss_counter.inc()

    def _count_evictions(self, evicted: int) -> None:
        if evicted:
            self._evictions += evicted
            self._eviction_counter.inc(evicted)


class BoundCachedFunction:
    """A cached method looked up on an instance: the instance becomes the first argument."""

    def __init__(self, cached: CachedFunction, instance: Any) -> None:
        self._cached = cached
        self._instance = instance
        self.__wrapped__ = cached.__wrapped__.__get__(instance)
        self.__name__ = cached.__wrapped__.__name__
        self.__doc__ = cached.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._cached(self._instance, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        return self._cached.invalidate(self._instance, *args, **kwargs)

    def cache_clear(self) -> Any:
        return self._cached.cache_clear()

    def cache_info(self) -> CacheInfo:
        return self._cached.cache_info()


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    """Mark a failed computation's exception as seen even if every caller was cancelled."""
    if not task.cancelled():
        task.exception()
