"""Authentication is deny-by-default: every public RPC is declared @public or @authenticated.

The gateway refuses to start with an RPC that nobody decided about, so a new RPC in
the proto fails this test (and the gateway) until its handler says who may call it.
"""
from __future__ import annotations

import grpc
import pytest

from services.gateway.auth import ACCESS, authenticated, public, require_declared_access
from services.gateway.servicer import SpartanServicer
from spartan.v1 import pb

SPARTAN = pb.DESCRIPTOR.services_by_name["Spartan"]
PUBLIC = {"GetChallenge", "Login"}  # the login handshake; everything else needs a session


def access_of(name: str) -> str | None:
    return getattr(getattr(SpartanServicer, name, None), ACCESS, None)


def test_every_rpc_of_the_gateway_has_declared_access() -> None:
    require_declared_access(SpartanServicer, SPARTAN)
    declared = {name: access_of(name) for name in SPARTAN.methods_by_name}
    assert {name for name, access in declared.items() if access == "public"} == PUBLIC
    assert all(access == "authenticated" for name, access in declared.items() if name not in PUBLIC)


def test_an_rpc_marked_neither_way_stops_the_servicer() -> None:
    class Forgetful:
        @public
        async def GetChallenge(self, request: object, context: grpc.aio.ServicerContext) -> None: ...

        @authenticated
        async def Login(self, request: object, context: grpc.aio.ServicerContext) -> None: ...

        async def ListUsers(self, request: object, context: grpc.aio.ServicerContext) -> None: ...

    with pytest.raises(TypeError) as refused:
        require_declared_access(Forgetful, SPARTAN)
    message = str(refused.value)
    assert "ListUsers" in message and "SendMsg" in message  # forgotten and missing alike
    assert "GetChallenge" not in message and "Login" not in message
