"""Registers servicers from the proto descriptor, with a response serializer that passes bytes through.

The generated `add_*Servicer_to_server` functions always call `SerializeToString`.
Gateways relay messages exactly as the history script stored and published them,
so a handler may yield the already-serialized `bytes` instead of a message object;
the serializer below sends such bytes unchanged and serializes everything else.
"""
from __future__ import annotations

from typing import Any

import grpc

from spartan.v1 import pb


def _serialize(response: Any) -> bytes:
    if isinstance(response, bytes):
        return response
    return response.SerializeToString()


def add_servicer(server: grpc.aio.Server, servicer: Any, service: str) -> None:
    """Add every method of `spartan.v1.<service>` implemented by `servicer`."""
    descriptor = pb.DESCRIPTOR.services_by_name[service]
    handlers = {}
    for method in descriptor.methods:
        request_type = getattr(pb, method.input_type.name)
        behaviour = getattr(servicer, method.name)
        factory = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(behaviour, request_deserializer=request_type.FromString,
                                        response_serializer=_serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))


def full_name(service: str) -> str:
    return pb.DESCRIPTOR.services_by_name[service].full_name
