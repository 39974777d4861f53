"""Errors the user can meet, as one plain sentence with the next step.

Why a module of its own: the same gRPC status reaches the client from many places
(start-up, commands, the send queue) and must read the same everywhere, never as
gRPC's internal text ("failed to connect to all addresses; ... Connection refused").
The errors are the project's (`spartan.errors`, rebuilt from the status by the connection).
Only the standard library, grpc and `spartan.errors` are imported here, so anything may use it.
"""

from __future__ import annotations

import grpc

from spartan.errors import RateLimited, SpartanError

# CANCELLED as an answer (not our own cancel, which raises asyncio.CancelledError): the server or the
# transport dropped the call under load; like an outage, the line waits and goes again with the same id.
OUTAGE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
DEFAULT_RETRY_AFTER_SECONDS = 1.0


def retry_after(exc: SpartanError) -> float | None:
    """Seconds the server asks to wait after RESOURCE_EXHAUSTED: its `google.rpc.RetryInfo`,
    else its `retry-after` trailer (both read into `RateLimited`), else a second."""
    if exc.code != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    return exc.retry_after if isinstance(exc, RateLimited) else DEFAULT_RETRY_AFTER_SECONDS


def is_retryable(exc: SpartanError) -> bool:
    """The rate limit or an outage: the same action can succeed later unchanged."""
    return exc.code in OUTAGE or exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def refused_connection(details: str) -> bool:
    """gRPC's text when nothing listens at the address (the server is not running)."""
    text = details.lower()
    return "connection refused" in text or "failed to connect to all addresses" in text


def not_running(addresses: list[str]) -> str:
    where = ", ".join(addresses)
    return f"No Spartan server answers at {where}: start it with `python3 server.py`, then run client.py again."


def unknown_user(user: str, known: list[str]) -> str:
    if known:
        return f"Could not log in as {user}: unknown user '{user}'. The users in config.yaml are: {', '.join(known)}."
    return f"Could not log in as {user}: unknown user '{user}'. Ask the operator which user names config.yaml defines."


def action_failed(action: str, exc: SpartanError) -> str:
    """`action` ("/leave group1", "Listing users") did not happen: why, and what to do next."""
    wait = retry_after(exc)
    if wait is not None:
        return (
            f"Not done: {action} (rate limit: the server allows it again in {max(1, round(wait))}s). Type /retry then."
        )
    if exc.code in OUTAGE:
        return f"Not done: {action} (the server is not reachable right now). Type /retry once it is back."
    return f"Not done: {action}: {exc.message}."


def users_unreachable() -> str:
    return "Cannot list users: the server is not reachable right now; try /users again in a moment."


# What the client's own receiver says about the stream, and notices a gateway sends on it, as
# the user should read them; None: not shown (a gateway shutting down closes the stream right
# after its notice, and the receiver's sentence about the lost connection says what matters:
# with one server "reconnecting to another one" was not true).
STREAM_NOTICES: dict[str, str | None] = {
    "Reconnecting…": "Lost the connection to the server; waiting for it to come back (what you type waits and goes "
    "out then).",
    "Reconnected.": "Connected again.",
    "this gateway is shutting down; reconnecting to another one": None,
}


def stream_notice(text: str) -> str | None:
    return STREAM_NOTICES.get(text, text)
