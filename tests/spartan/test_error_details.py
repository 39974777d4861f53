"""The client reads the retry delay from `google.rpc.RetryInfo` first, the `retry-after` trailer second.

A real grpc.aio server answers through the project's handler wrapper (`spartan.rpc.handlers.unary`),
so the statuses are the ones a gateway sends; one handler also aborts by hand with details and
trailer disagreeing, or with a trailer only (an older server), to show which one wins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from spartan.client import explain
from spartan.errors import (
    InvalidArgument,
    RateLimited,
    field_violations,
    from_rpc_error,
    retry_delay,
    rich_status_trailers,
    trailers_of,
)
from spartan.rpc.handlers import unary
from spartan.v1 import pb, rpc


class Refusing(rpc.SpartanServicer):
    @unary("test")
    async def SendMsg(self, request: pb.Message, context: grpc.aio.ServicerContext) -> pb.SendAck:
        if request.text == "limited":
            raise RateLimited("rate limit exceeded for send: try again in 2.3s", retry_after=2.2504, limit=3)
        if request.text == "invalid":
            raise InvalidArgument("recipient name 'X' is not valid", field="recipient")
        if request.text == "disagree":  # RetryInfo says 2.5 s, the trailer 9 s
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down"
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromMilliseconds(2500)
            await context.abort(code, message, trailing_metadata=(("retry-after", "9.000"),
                                                                 *rich_status_trailers(code, message, [info])))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", trailing_metadata=(("retry-after", "1.5"),))
        raise AssertionError("abort raises")


@pytest.fixture
async def stub() -> AsyncIterator[rpc.SpartanStub]:
    server = grpc.aio.server()
    rpc.add_SpartanServicer_to_server(Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield rpc.SpartanStub(channel)
    finally:
        await server.stop(None)


async def refusal(stub: rpc.SpartanStub, text: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendMsg(pb.Message(text=text), timeout=10)
    return caught.value


async def test_rate_limited_sends_retry_info_and_the_same_trailer(stub: rpc.SpartanStub) -> None:
    error = await refusal(stub, "limited")
    assert trailers_of(error)["retry-after"] == "2.250"
    assert retry_delay(error) == pytest.approx(2.25)
    assert explain.retry_after(from_rpc_error(error)) == pytest.approx(2.25)  # as the client reads it
    rebuilt = from_rpc_error(error)
    assert isinstance(rebuilt, RateLimited) and rebuilt.retry_after == pytest.approx(2.25)


async def test_retry_info_wins_over_the_trailer(stub: rpc.SpartanStub) -> None:
    error = await refusal(stub, "disagree")
    assert retry_delay(error) == pytest.approx(2.5)
    assert explain.retry_after(from_rpc_error(error)) == pytest.approx(2.5)  # as the client reads it


async def test_the_trailer_serves_when_there_is_no_retry_info(stub: rpc.SpartanStub) -> None:
    error = await refusal(stub, "trailer only")
    assert retry_delay(error) == pytest.approx(1.5)
    assert explain.retry_after(from_rpc_error(error)) == pytest.approx(1.5)  # as the client reads it
    assert isinstance(from_rpc_error(error), RateLimited)


async def test_invalid_argument_names_its_field_and_survives_being_passed_on(stub: rpc.SpartanStub) -> None:
    error = await refusal(stub, "invalid")
    assert field_violations(error) == [("recipient", "recipient name 'X' is not valid")]
    rebuilt = from_rpc_error(error)  # what a gateway does with an internal service's refusal
    assert isinstance(rebuilt, InvalidArgument)
    assert len(rebuilt.details) == 1 and rebuilt.details[0].field_violations[0].field == "recipient"
