"""The send queue on its own: order, the rate limit's retry-after, peers without keys, refusals, the disk.

The server here is a small stand-in that answers SendMsg the way the gateway does
(RESOURCE_EXHAUSTED with a `retry-after` trailer, UNAVAILABLE, INVALID_ARGUMENT),
as the client's connection raises them (an `AioRpcError` rebuilt by `from_rpc_error`); the CLI
tests run the real gateway.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from spartan.client.e2e import PeerHasNoKeys
from spartan.client.outgoing import Outgoing
from spartan.client.state import ClientState
from spartan.crypto.membership import MembershipError
from spartan.errors import SpartanError, from_rpc_error
from spartan.v1 import pb


def refusal(code: grpc.StatusCode, details: str, retry_after: str | None = None) -> SpartanError:
    trailers = grpc.aio.Metadata(("retry-after", retry_after)) if retry_after else grpc.aio.Metadata()
    return from_rpc_error(grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details))


class Server:
    """Accepts `burst` sends, then refuses one with retry-after, then accepts again, ..."""

    def __init__(self, burst: int = 2, retry_after: str = "0.2") -> None:
        self.burst = burst
        self.retry_after = retry_after
        self.accepted: list[tuple[str, str]] = []
        self.tokens = burst
        self.refuse: dict[str, SpartanError] = {}  # text -> a lasting refusal
        self.no_keys: set[str] = set()
        self.cancel_once: set[str] = set()
        self.unverified: set[str] = set()  # groups no signed change makes the sender a member of

    async def seal(self, target: str, text: str, message_id: str) -> pb.Message:
        if target in self.no_keys:
            raise PeerHasNoKeys(target)
        if target in self.unverified:
            raise MembershipError(f"no change signed by a member makes you a member of {target[6:]}")
        return pb.Message(id=message_id, recipient=target, body=text.encode())

    async def send_msg(self, message: pb.Message) -> pb.SendAck:
        text = message.body.decode()
        if text in self.cancel_once:
            self.cancel_once.discard(text)
            raise asyncio.CancelledError  # what a call sees when a failover closes its channel
        if text in self.refuse:
            raise self.refuse[text]
        if self.tokens == 0:
            self.tokens = 1
            raise refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited", self.retry_after)
        self.tokens -= 1
        self.accepted.append((message.recipient, text))
        return pb.SendAck(id=message.id)


def queue(server: Server, state: ClientState, notices: list[str], statuses: list[str],
          countdown: bool = True) -> Outgoing:
    return Outgoing(state, server.seal, server.send_msg, status=statuses.append, notice=notices.append,
                    countdown=countdown)


async def drained(outgoing: Outgoing, timeout: float = 10.0) -> None:
    async def empty() -> None:
        while outgoing.unsent() - len([1 for t, _ in outgoing.state.outbox.values() if t in outgoing.blocked]):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(empty(), timeout)
    await asyncio.sleep(0.05)  # the summary is said once the queue is seen empty


async def test_lines_over_the_limit_go_in_order_with_one_summary() -> None:
    server, notices, statuses = Server(), [], []
    outgoing = queue(server, ClientState(), notices, statuses)
    outgoing.start()
    texts = [f"line {i}" for i in range(1, 8)]
    for text in texts:
        outgoing.put("bob", text)
    await drained(outgoing)
    await outgoing.stop()
    assert server.accepted == [("bob", text) for text in texts]
    assert notices == ["Sent the 5 messages that waited for the rate limit."]
    assert any("message(s) waiting for the rate limit: next in 1s." in s for s in statuses), statuses
    assert statuses[-1] == ""  # the status line is cleared at the end


async def test_piped_status_does_not_count_down() -> None:
    server, notices, statuses = Server(burst=0, retry_after="0.3"), [], []
    outgoing = queue(server, ClientState(), notices, statuses, countdown=False)
    outgoing.start()
    outgoing.put("bob", "one")
    await drained(outgoing)
    await outgoing.stop()
    assert [s for s in statuses if s] == ["1 message(s) waiting for the rate limit; they go out in order."]


async def test_a_peer_without_keys_holds_only_their_lines_until_their_key_comes() -> None:
    server, notices, statuses = Server(burst=100), [], []
    server.no_keys.add("bob")
    outgoing = queue(server, ClientState(), notices, statuses)
    outgoing.start()
    for target, text in (("bob", "b1"), ("carol", "c1"), ("bob", "b2"), ("carol", "c2")):
        outgoing.put(target, text)
    await drained(outgoing)
    assert server.accepted == [("carol", "c1"), ("carol", "c2")]
    assert statuses[-1] == "2 message(s) for bob will be sent once they log in for the first time."
    server.no_keys.clear()
    outgoing.unblock("bob")
    await drained(outgoing)
    await outgoing.stop()
    assert server.accepted[2:] == [("bob", "b1"), ("bob", "b2")]
    assert notices == [] and statuses[-1] == ""


async def test_a_lasting_refusal_names_the_line_and_the_rest_goes() -> None:
    server, notices, statuses = Server(burst=100), [], []
    server.refuse["bad"] = refusal(grpc.StatusCode.PERMISSION_DENIED, "you are not a member of group team")
    outgoing = queue(server, ClientState(), notices, statuses)
    outgoing.start()
    for text in ("before", "bad", "after"):
        outgoing.put("group:team", text)
    await drained(outgoing)
    await outgoing.stop()
    assert [text for _, text in server.accepted] == ["before", "after"]
    assert notices == ['Not sent to team: you are not a member of group team: "bad"']


async def test_a_group_this_client_is_not_verified_in_refuses_the_line_and_the_rest_goes() -> None:
    server, notices, statuses = Server(burst=100), [], []
    server.unverified.add("group:team")
    outgoing = queue(server, ClientState(), notices, statuses)
    outgoing.start()
    outgoing.put("bob", "before")
    outgoing.put("group:team", "hello team")
    outgoing.put("bob", "after")
    await drained(outgoing)
    await outgoing.stop()
    assert [text for _, text in server.accepted] == ["before", "after"]
    assert notices == ['Not sent to team: no change signed by a member makes you a member of team: "hello team"']


async def test_unsent_lines_survive_a_restart_in_order(tmp_path: Path) -> None:
    path = tmp_path / "alice.state"
    server, notices, statuses = Server(burst=1, retry_after="60"), [], []
    state = ClientState(path)
    outgoing = queue(server, state, notices, statuses)
    outgoing.start()
    for text in ("one", "two", "three"):
        outgoing.put("bob", text)
    await asyncio.sleep(0.3)
    await outgoing.settle(1.0)  # returns at once: the rate limit holds the rest
    await outgoing.stop()
    state.close()
    assert server.accepted == [("bob", "one")]

    again = ClientState(path)
    assert [text for _, text in again.outbox.values()] == ["two", "three"]
    later = Server(burst=100)
    outgoing = queue(later, again, [], [])
    outgoing.start()
    await drained(outgoing)
    await outgoing.stop()
    again.close()
    assert later.accepted == [("bob", "two"), ("bob", "three")]
    assert ClientState(path).outbox == {}


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.CANCELLED])
async def test_an_outage_holds_the_queue_quietly(code: grpc.StatusCode) -> None:
    server, notices, statuses = Server(burst=100), [], []
    server.refuse["one"] = refusal(code, "connection refused")
    outgoing = queue(server, ClientState(), notices, statuses, countdown=False)
    outgoing.start()
    outgoing.put("bob", "one")
    await asyncio.sleep(0.2)
    assert statuses[-1] == "1 message(s) waiting for the server; they go out when it is back."
    del server.refuse["one"]  # the server is back
    await drained(outgoing)
    await outgoing.stop()
    assert server.accepted == [("bob", "one")]
    assert notices == ["Sent the 1 message that waited for the server."]


async def test_a_call_cancelled_by_a_failover_is_sent_again_and_stop_still_stops() -> None:
    server, notices, statuses = Server(burst=100), [], []
    server.cancel_once.add("one")
    outgoing = queue(server, ClientState(), notices, statuses)
    outgoing.start()
    outgoing.put("bob", "one")
    outgoing.put("bob", "two")
    await drained(outgoing)
    assert server.accepted == [("bob", "one"), ("bob", "two")]
    await outgoing.stop()
    assert outgoing._task is None
