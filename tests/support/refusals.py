"""The status a server answered with, whichever way the call went.

The client's connection raises the project's error (`spartan.errors`) and keeps the
server's `AioRpcError` as its cause; a raw stub raises the `AioRpcError` itself. Tests
about what the server sent (code, sentence, trailers) read it the same way from both.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

import grpc

from spartan.errors import SpartanError


def status_of(error: BaseException) -> grpc.aio.AioRpcError:
    """The server's status behind `error`; re-raises anything that is not one."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error
    if isinstance(error, SpartanError) and isinstance(error.__cause__, grpc.aio.AioRpcError):
        return error.__cause__
    raise error


async def refusal(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The status `call` was refused with; fails the test if it succeeded."""
    try:
        await call
    except (grpc.aio.AioRpcError, SpartanError) as error:
        return status_of(error)
    raise AssertionError("the call succeeded")


async def stream_refusal(call: AsyncIterator[object]) -> grpc.aio.AioRpcError:
    """The status a server-streaming call ended with; fails the test if it ended without one."""
    try:
        async for _ in call:
            pass
    except (grpc.aio.AioRpcError, SpartanError) as error:
        return status_of(error)
    raise AssertionError("the stream ended without a status")
