"""`@rate`: the project's rate-limit decorator for async gRPC servicer methods.

    class Gateway(rpc.SpartanServicer):
        def __init__(self, limits: RateLimits):
            self.limits = limits  # RateLimits(RateLimiter(redis), policies_from_config(cfg))

        @rate("send")
        async def SendMsg(self, request, context): ...

        @rate("receive")
        async def ReceiveMsg(self, request, context):  # async generator: checked once at start
            yield ...

The check runs before the handler body, through the `limits` the servicer was
given at construction (the `Limited` protocol): nothing is looked up by name. The bucket key is the authenticated user
(`spartan.context.current_user`, set by the auth step that wraps the handler, so
put that decorator *above* `@rate`), or the peer address when nobody is logged in.
A rejected call raises `spartan.errors.RateLimited` (RESOURCE_EXHAUSTED, with
`retry-after`, `ratelimit-limit` and `ratelimit-remaining` trailers once the server
plumbing converts it); a Redis outage raises `Unavailable`. Neither lets the call run.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

import grpc

from spartan.context import current_user
from spartan.ratelimit.limits import RateLimits

KeyFunction = Callable[[Any, grpc.aio.ServicerContext], str]
Handler = TypeVar("Handler", bound=Callable[..., Any])


class Limited(Protocol):
    """A servicer `@rate` can limit: it was given its `RateLimits` at construction."""

    limits: RateLimits


def rate(
    api: str,
    *,
    limit: float | None = None,
    period: float | None = None,
    burst: int | None = None,
    key: KeyFunction | None = None,
    cost: int = 1,
) -> Callable[[Handler], Handler]:
    """Limit calls to the decorated handler per user under the policy named `api`.

    The servicer is `Limited`: its `limits` take the tokens. `limit` (tokens per
    `period` seconds) and `burst` given here replace the configured values for
    this API; a `limit` without `burst` also sets the burst to the limit. With
    `rate.enabled: false` nothing is checked. `key(request, context)` picks the
    bucket owner instead of the authenticated user. `cost` is the tokens one call takes.
    """
    if not api:
        raise ValueError("@rate needs an API name")
    if cost < 1:
        raise ValueError(f"@rate cost must be at least 1, got {cost}")
    if limit is not None and not limit > 0:
        raise ValueError(f"@rate limit must be greater than zero, got {limit}")
    if period is not None and not period > 0:
        raise ValueError(f"@rate period must be greater than zero, got {period}")
    if burst is not None and burst < 1:
        raise ValueError(f"@rate burst must be at least 1, got {burst}")

    async def enforce(servicer: Limited, request: Any, context: grpc.aio.ServicerContext) -> None:
        limits = servicer.limits  # a servicer given no limits fails here, before anything runs
        owner = key(request, context) if key is not None else default_key(context)
        await limits.take(api, owner, cost=cost, limit=limit, period=period, burst=burst)

    def decorate(handler: Handler) -> Handler:
        if inspect.isasyncgenfunction(handler):

            @functools.wraps(handler)
            async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await enforce(self, request, context)
                async for item in handler(self, request, context):
                    yield item

            return streaming  # type: ignore[return-value]
        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
                await enforce(self, request, context)
                return await handler(self, request, context)

            return unary  # type: ignore[return-value]
        raise TypeError(f"@rate({api!r}) decorates async def handlers or async generators, not {handler!r}")

    return decorate


def default_key(context: grpc.aio.ServicerContext) -> str:
    """The authenticated user, else 'peer:' + the caller's host (e.g. 'peer:ipv4:10.0.0.7').

    The port is dropped so that reconnecting does not give a caller a fresh bucket.
    User names cannot contain ':', so the two kinds of key never collide.
    """
    return current_user.get() or f"peer:{peer_host(context.peer())}"


def peer_host(peer: str) -> str:
    """'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7', 'ipv6:[::1]:5000' -> 'ipv6:[::1]'; others unchanged."""
    if peer.startswith(("ipv4:", "ipv6:")):
        host, _, port = peer.rpartition(":")
        if port.isdigit() and host not in ("ipv4", "ipv6"):
            return host
    return peer
