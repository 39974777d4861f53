"""Every public RPC fuzzed with generated input: precise statuses, no crash, no traceback, no harm to others.

Each answer must be in the set of statuses that RPC may give that caller: without a
session every RPC but the login handshake is UNAUTHENTICATED; a generated login never
succeeds; eve, a third user, never reads alice and bob's 1:1 conversation, whatever
she names; undecodable bytes are INVALID_ARGUMENT, never INTERNAL.
"""
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
from tests.support.stack import rates

S = grpc.StatusCode
REFUSED = {S.INVALID_ARGUMENT, S.NOT_FOUND, S.PERMISSION_DENIED, S.RESOURCE_EXHAUSTED}
CHANGES = {S.OK, S.FAILED_PRECONDITION, S.ALREADY_EXISTS} | REFUSED
ALLOWED: dict[str, set[grpc.StatusCode]] = {  # what each RPC may answer a logged-in user
    "SendMsg": {S.OK, S.FAILED_PRECONDITION} | REFUSED,
    "ReceiveMsg": {S.OK, S.FAILED_PRECONDITION} | REFUSED,
    "Ack": {S.OK} | REFUSED,
    "GetChallenge": {S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND, S.RESOURCE_EXHAUSTED},
    "Login": {S.UNAUTHENTICATED, S.FAILED_PRECONDITION} | REFUSED,  # never OK: no generated login succeeds
    "GetKeys": {S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND, S.RESOURCE_EXHAUSTED},
    "ListUsers": {S.OK, S.RESOURCE_EXHAUSTED},
    "PendingRequests": {S.OK, S.RESOURCE_EXHAUSTED},
    "RequestChat": CHANGES,
    "RespondChat": CHANGES,
    "GetHistory": {S.OK, S.OUT_OF_RANGE} | REFUSED,
    "CreateGroup": CHANGES,
    "GetGroup": {S.OK} | REFUSED,
    "AddMember": CHANGES,
    "RemoveMember": CHANGES,
    "SendSenderKeys": {S.OK, S.FAILED_PRECONDITION} | REFUSED,
}
PUBLIC = {"GetChallenge", "Login"}
# Without a session: the login is asked for, unless the request is refused before anyone reads it
# (a string field over its length limit, or a request over the size cap).
NO_SESSION = {S.UNAUTHENTICATED, S.INVALID_ARGUMENT, S.RESOURCE_EXHAUSTED}
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
STRATEGIES = {  # one request strategy per public RPC
    "SendMsg": message,
    "GetHistory": st.builds(pb.HistoryRequest, conversation=names, peer=names, group=names,
                                               after_offset=offsets, limit=limits),
    "RequestChat": st.builds(pb.ChatRequest, peer=names),
    "RespondChat": st.builds(pb.ChatRequest, peer=names, accept=st.booleans()),
    "GetKeys": st.builds(pb.GetKeysRequest, user=names),
    "GetChallenge": st.builds(pb.ChallengeRequest, user=names),
    "Login": st.builds(pb.LoginRequest, user=names, nonce=st.binary(max_size=80),
                                          signature=st.binary(max_size=80),
                                          keys=st.builds(pb.PublicKeys, user=names, identity_key=st.binary(max_size=40),
                                                         agreement_key=st.binary(max_size=40),
                                                         agreement_signature=st.binary(max_size=70))),
    "CreateGroup": st.builds(pb.GroupRequest, group=names, user=names,
                                                members=st.lists(names, max_size=3)),
    "GetGroup": st.builds(pb.GroupRequest, group=names),
    "AddMember": st.builds(pb.GroupRequest, group=names, user=names),
    "RemoveMember": st.builds(pb.GroupRequest, group=names, user=names),
    "ReceiveMsg": message,
    "Ack": st.builds(pb.AckRequest, positions=st.lists(cursor, max_size=5)),
    "ListUsers": st.just(pb.ListUsersRequest()),
    "PendingRequests": st.just(pb.PendingRequestsRequest()),
    "SendSenderKeys": st.builds(pb.SenderKeyBatch, group=names, keys=st.lists(message, max_size=3)),
}
requests = st.one_of(*(st.tuples(st.just(name), strategy) for name, strategy in STRATEGIES.items()))
REQUEST_TYPES = {name: method.input_type.name for name, method in pb.DESCRIPTOR.services_by_name["Spartan"]
                 .methods_by_name.items()}


def test_every_public_rpc_is_fuzzed() -> None:
    assert set(STRATEGIES) == set(ALLOWED) == set(REQUEST_TYPES)


# Hundreds of generated calls must reach the handlers' checks, not stop at the limiter.
CALLS = rates(send=10000, request=10000, group=10000)
EVES = {"dm:alice:eve", "dm:bob:eve", "dm:charlie:eve", "dm:eve:foo", "dm:bar:eve", "dm:baz:eve", "dm:eve:qux",
        "group:group1"}


def test_public_api_survives_generated_input(stack_factory, tmp_path) -> None:
    stack = stack_factory(gateways=1, settings={"SPARTAN_MAX_NUM_MESSAGES_PER_USER": "50", **CALLS})
    loop = asyncio.new_event_loop()
    identity, _ = load_or_create("eve", str(tmp_path / "keys"))
    conn = Connection([stack.address(1)], identity, TlsConfig())
    loop.run_until_complete(conn.open())

    async def open_raw() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(stack.address(1))

    raw_channel = loop.run_until_complete(open_raw())

    async def alice_writes_to_bob() -> None:
        from spartan.client.headless import HeadlessClient

        bob = await HeadlessClient("bob", [stack.address(1)], str(tmp_path / "keys")).start()
        alice = await HeadlessClient("alice", [stack.address(1)], str(tmp_path / "keys")).start()
        await alice.send("bob", "for bob only")
        await bob.wait_for(1)
        await alice.close()
        await bob.close()

    loop.run_until_complete(alice_writes_to_bob())

    async def call(method: str, request: object, authenticated: bool) -> grpc.StatusCode:
        metadata = conn.metadata if authenticated else ()
        stub = conn.stub
        assert stub is not None
        try:
            if method == "ReceiveMsg":  # read until the status or the deadline, whichever comes first
                async for delivered in stub.ReceiveMsg(request, metadata=metadata, timeout=1):
                    assert not delivered.conversation or delivered.conversation in EVES or \
                        delivered.conversation == "inbox:eve", delivered
                return grpc.StatusCode.OK
            answer = await getattr(stub, method)(request, metadata=metadata, timeout=10)
            if method == "GetHistory":  # eve reads only conversations she is in
                assert all(m.conversation in EVES for m in answer.messages), answer
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
        allowed = ALLOWED[method] if authenticated or method in PUBLIC else NO_SESSION
        assert code in allowed, f"{method} ({'eve' if authenticated else 'no session'}) answered {code}"

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(sorted(set(REQUEST_TYPES) - {"ReceiveMsg"})), st.binary(max_size=300))
    def fuzz_bytes(method: str, payload: bytes) -> None:
        async def send() -> None:
            rpc = raw_channel.unary_unary(f"/spartan.v1.Spartan/{method}", request_serializer=None,
                                          response_deserializer=None)
            try:
                await rpc(payload, metadata=conn.metadata, timeout=10)
                code = S.OK
            except grpc.aio.AioRpcError as exc:
                assert "Traceback" not in (exc.details() or "")
                code = exc.code()
            assert code in ALLOWED[method] | {S.INVALID_ARGUMENT}, f"{method} answered {code} to {payload!r}"

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
            await bob.wait_until(lambda: any((t or "").startswith("still fine") for t in bob.texts()))
            await alice.close()
            await bob.close()
            return bob.texts()

        texts = loop.run_until_complete(conversation())
        # Exactly the new message, after alice's first one if bob's new client was handed it again.
        assert [t for t in texts if t != "for bob only"] == [t for t in texts if (t or "").startswith("still fine")]
        assert len(texts) - texts.count("for bob only") == 1
        assert "unhandled error" not in stack.all_logs()  # every failure was an expected, precise status
    finally:
        loop.run_until_complete(conn.close())
        loop.run_until_complete(raw_channel.close())
        loop.close()
