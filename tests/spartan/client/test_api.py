"""The client's typed calls match the proto: each names a unary method of `spartan.v1.Spartan` with that
method's request and reply types, and every unary method a client calls after logging in has one."""
from __future__ import annotations

from spartan.client.api import GatewayApi, Rpc
from spartan.v1 import pb

LOGIN = {"GetChallenge", "Login"}  # the connection's own handshake, before a token exists


def typed_calls() -> dict[str, Rpc]:  # type: ignore[type-arg]
    return {name: value for name, value in vars(GatewayApi).items() if isinstance(value, Rpc)}


def test_every_typed_call_is_a_unary_method_with_its_request_and_reply_types() -> None:
    service = pb.DESCRIPTOR.services_by_name["Spartan"]
    for name, rpc in typed_calls().items():
        method = service.methods_by_name[rpc.method]
        assert not method.client_streaming and not method.server_streaming, name
        assert method.input_type.full_name == rpc.request.DESCRIPTOR.full_name, name
        assert method.output_type.full_name == rpc.reply.DESCRIPTOR.full_name, name


def test_every_unary_method_after_login_has_a_typed_call() -> None:
    service = pb.DESCRIPTOR.services_by_name["Spartan"]
    unary = {m.name for m in service.methods if not m.client_streaming and not m.server_streaming}
    assert {rpc.method for rpc in typed_calls().values()} == unary - LOGIN
