"""Registers servicers from the proto descriptor, with a response serializer that passes bytes through.

The generated `add_*Servicer_to_server` functions always call `SerializeToString`.
Gateways relay messages exactly as the history script stored and published them,
so a handler may yield the already-serialized `bytes` instead of a message object;
the serializer below sends such bytes unchanged and serializes everything else.
Requests are parsed by `spartan.rpc.malformed.parse_request`, which turns bytes that
do not parse (or, on the public service, an over-long string field) into a value the
handler decorators refuse with INVALID_ARGUMENT, instead of grpc's logged traceback.
"""

from __future__ import annotations

from typing import Any

import grpc

from spartan.rpc.malformed import parse_request
from spartan.v1 import pb


def _serialize(response: Any) -> bytes:
    if isinstance(response, bytes):
        return response
    return response.SerializeToString()


def add_servicer(server: grpc.aio.Server, servicer: Any, service: str, max_string_chars: int | None = None) -> None:
    """Add every method of `spartan.v1.<service>` implemented by `servicer`; with `max_string_chars`,
    a request with a longer string field anywhere is refused before its handler runs."""
    descriptor = pb.DESCRIPTOR.services_by_name[service]
    handlers = {}
    for method in descriptor.methods:
        request_type = getattr(pb, method.input_type.name)
        behaviour = getattr(servicer, method.name)
        factory = (
            grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = factory(
            behaviour,
            request_deserializer=parse_request(request_type, max_string_chars),
            response_serializer=_serialize,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))


def full_name(service: str) -> str:
    return pb.DESCRIPTOR.services_by_name[service].full_name
