"""Per-RPC context shared by decorators: who the authenticated caller is.

grpc.aio runs each RPC in its own task, so a ContextVar set by the authentication
step of a handler is visible to everything that handler awaits (rate limiting,
logging) and to nothing else.
"""

from __future__ import annotations

from contextvars import ContextVar

current_user: ContextVar[str] = ContextVar("spartan_current_user", default="")
current_rpc: ContextVar[str] = ContextVar("spartan_current_rpc", default="")
