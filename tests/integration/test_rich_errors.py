"""Rich gRPC error details from a real gateway: RetryInfo on a rate limit, BadRequest on an invalid field.

With the shipped config (3 sends per 30 s) alice's fourth send is refused. The refusal
carries `google.rpc.RetryInfo` in `grpc-status-details-bin` with the delay the
`retry-after` trailer states, and the client's readers (`from_rpc_error`,
`explain.retry_after`) take it from there. An invalid request names its field.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from spartan.client import explain
from spartan.errors import InvalidArgument, RateLimited, SpartanError, field_violations, from_rpc_error, trailers_of
from spartan.v1 import pb, rpc
from tests.support.refusals import status_of


def retry_info(error: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo:
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    assert status.code == error.code().value[0] and status.message == error.details()
    found = [detail for detail in status.details if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(found) == 1, status
    info = error_details_pb2.RetryInfo()
    found[0].Unpack(info)
    return info


async def test_a_rate_limit_refusal_carries_retry_info_with_the_trailers_delay(stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1, settings={"SPARTAN_RATE__RATE": "0"})  # back to config.yaml's limit
    await client_factory("bob", stack.addresses)
    alice = await client_factory("alice", stack.addresses)
    for text in ("one", "two", "three"):  # config.yaml: 3 sends per 30 s
        await alice.send("bob", text)
    with pytest.raises(SpartanError) as caught:
        await alice.send("bob", "four")
    error = status_of(caught.value)  # what the server sent
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailer = float(trailers_of(error)["retry-after"])
    info = retry_info(error)
    delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    assert 0 < trailer <= 30
    assert delay == pytest.approx(trailer, abs=1e-9)  # the same delay, to the millisecond both state
    rebuilt = from_rpc_error(error)
    assert isinstance(rebuilt, RateLimited) and rebuilt.retry_after == pytest.approx(delay, abs=1e-9)
    assert explain.retry_after(caught.value) == pytest.approx(delay, abs=1e-9)  # what the client's connection raised


async def test_an_invalid_request_names_its_field_in_bad_request(stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    bob = await client_factory("bob", stack.addresses)
    with pytest.raises(SpartanError) as caught:
        await bob.call("SendMsg", pb.Message(id="m1", kind=pb.CHAT, recipient="Not A Name", body=b"x"))
    error = status_of(caught.value)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == [("recipient", error.details())]
    rebuilt = from_rpc_error(error)
    assert isinstance(rebuilt, InvalidArgument) and str(rebuilt) == error.details()

    with pytest.raises(SpartanError) as caught:
        await bob.call("SendMsg", pb.Message(id="m2", kind=pb.CHAT, recipient="alice", body=b""))
    assert [field for field, _ in field_violations(status_of(caught.value))] == ["body"]

    async with grpc.aio.insecure_channel(stack.address(1)) as channel:  # no session: the login handshake
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc.SpartanStub(channel).GetChallenge(pb.ChallengeRequest(user="?"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in field_violations(caught.value)] == ["user"]
