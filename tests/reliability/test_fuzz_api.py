"""Every public RPC fuzzed with generated input: precise statuses, no crash, no traceback, no harm to others."""
from __future__ import annotations

import asyncio
import uuid

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spartan.client.connection import Connection
from spartan.config import TlsConfig
from spartan.crypto.keystore import load_or_create
from spartan.v1 import pb

CLEAN = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OUT_OF_RANGE,
}
EXAMPLES = 150

names = st.one_of(st.sampled_from(["alice", "bob", "group1", "zed", "", "dm:alice:bob", "group:group1"]),
                  st.text(max_size=80), st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=10))
offsets = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**63]))
limits = st.integers(0, 2**32 - 1)
bodies = st.one_of(st.binary(max_size=200), st.sampled_from([b"", b"x" * 70000]))
kinds = st.sampled_from(list(pb.Kind.values()) + [99])

cursor = st.builds(pb.Cursor, conversation=names, offset=offsets, epoch=st.text(max_size=20))
message = st.builds(pb.Message, id=st.one_of(st.text(max_size=80), st.just("")), kind=kinds, sender=names,
                    recipient=names, group=names, body=bodies, conversation=names, offset=offsets,
                    resume=st.lists(cursor, max_size=3), text=st.text(max_size=50))
requests = st.one_of(
    st.tuples(st.just("SendMsg"), message),
    st.tuples(st.just("GetHistory"), st.builds(pb.HistoryRequest, conversation=names, peer=names, group=names,
                                               after_offset=offsets, limit=limits)),
    st.tuples(st.just("RequestChat"), st.builds(pb.ChatRequest, peer=names)),
    st.tuples(st.just("RespondChat"), st.builds(pb.ChatRequest, peer=names, accept=st.booleans())),
    st.tuples(st.just("GetKeys"), st.builds(pb.GetKeysRequest, user=names)),
    st.tuples(st.just("GetChallenge"), st.builds(pb.ChallengeRequest, user=names)),
    st.tuples(st.just("Login"), st.builds(pb.LoginRequest, user=names, nonce=st.binary(max_size=80),
                                          signature=st.binary(max_size=80),
                                          keys=st.builds(pb.PublicKeys, user=names, identity_key=st.binary(max_size=40),
                                                         agreement_key=st.binary(max_size=40),
                                                         agreement_signature=st.binary(max_size=70)))),
    st.tuples(st.just("CreateGroup"), st.builds(pb.GroupRequest, group=names, user=names,
                                                members=st.lists(names, max_size=3))),
    st.tuples(st.just("GetGroup"), st.builds(pb.GroupRequest, group=names)),
    st.tuples(st.just("AddMember"), st.builds(pb.GroupRequest, group=names, user=names)),
    st.tuples(st.just("RemoveMember"), st.builds(pb.GroupRequest, group=names, user=names)),
    st.tuples(st.just("ReceiveMsg"), message),
)


def test_public_api_survives_generated_input(stack_factory, tmp_path) -> None:
    stack = stack_factory(gateways=1, settings={"SPARTAN_MAX_NUM_MESSAGES_PER_USER": "50"})
    loop = asyncio.new_event_loop()
    identity, _ = load_or_create("eve", str(tmp_path / "keys"))
    conn = Connection([stack.address(1)], identity, TlsConfig())
    loop.run_until_complete(conn.open())

    async def open_raw() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(stack.address(1))

    raw_channel = loop.run_until_complete(open_raw())

    async def call(method: str, request: object, authenticated: bool) -> grpc.StatusCode:
        metadata = conn.metadata if authenticated else ()
        stub = conn.stub
        assert stub is not None
        try:
            if method == "ReceiveMsg":
                stream = stub.ReceiveMsg(request, metadata=metadata, timeout=0.5)
                await stream.initial_metadata()
                stream.cancel()
                return grpc.StatusCode.OK
            await getattr(stub, method)(request, metadata=metadata, timeout=10)
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            assert "Traceback" not in (exc.details() or "")
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and method == "ReceiveMsg":
                return grpc.StatusCode.OK  # an open stream that had nothing to say within the deadline
            return exc.code()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(requests, st.booleans())
    def fuzz(case: tuple[str, object], authenticated: bool) -> None:
        method, request = case
        code = loop.run_until_complete(call(method, request, authenticated))
        assert code in CLEAN, f"{method} answered {code}"

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(["SendMsg", "GetHistory", "Login", "ListUsers"]), st.binary(max_size=300))
    def fuzz_bytes(method: str, payload: bytes) -> None:
        async def send() -> None:
            rpc = raw_channel.unary_unary(f"/spartan.v1.Spartan/{method}", request_serializer=None,
                                          response_deserializer=None)
            try:
                await rpc(payload, metadata=conn.metadata, timeout=10)
            except grpc.aio.AioRpcError as exc:
                assert "Traceback" not in (exc.details() or "")
                assert exc.code() != grpc.StatusCode.UNAVAILABLE

        loop.run_until_complete(send())

    try:
        fuzz()
        fuzz_bytes()
        # Nothing was harmed: the gateway still serves a normal conversation.
        from spartan.client.headless import HeadlessClient

        async def conversation() -> list[str | None]:
            alice = await HeadlessClient("alice", [stack.address(1)], str(tmp_path / "keys")).start()
            bob = await HeadlessClient("bob", [stack.address(1)], str(tmp_path / "keys")).start()
            await alice.send("bob", f"still fine {uuid.uuid4().hex}")
            received = await bob.wait_for(1)
            await alice.close()
            await bob.close()
            return [r.text for r in received]

        texts = loop.run_until_complete(conversation())
        assert texts[0] is not None and texts[0].startswith("still fine")
        assert "unhandled error" not in stack.all_logs()  # every failure was an expected, precise status
    finally:
        loop.run_until_complete(conn.close())
        loop.run_until_complete(raw_channel.close())
        loop.close()
