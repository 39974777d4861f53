"""How a gateway reaches a replicated service: every replica in turn, and a retry on another.

A channel to the addresses of a setting (spartan.service_addresses) balances calls
round-robin over every address, and gRPC's own retry policy repeats a call that failed
with UNAVAILABLE on another replica, but only for methods the proto marks
`NO_SIDE_EFFECTS` or `IDEMPOTENT`: a retried chat request or group change could happen
twice, so those fail with the status and the caller decides.
"""

from __future__ import annotations

import json

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

from spartan.config import TlsConfig
from spartan.rpc.credentials import open_channel
from spartan.service_addresses import channel_target
from spartan.v1 import pb

RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
PRESENCE = pb.DESCRIPTOR.services_by_name["Presence"]
HISTORY = pb.DESCRIPTOR.services_by_name["History"]
RETRIED_LEVELS = (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)


def service_config(service: ServiceDescriptor) -> str:
    """The JSON service config for channels to `service`: round-robin, retries for the safe methods."""
    retried = [
        {"service": service.full_name, "method": method.name}
        for method in service.methods
        if method.GetOptions().idempotency_level in RETRIED_LEVELS
    ]
    config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retried:
        config["methodConfig"] = [{"name": retried, "retryPolicy": RETRY_POLICY}]
    return json.dumps(config)


def service_channel(
    setting: str,
    service: ServiceDescriptor,
    tls: TlsConfig,
    interceptors: list[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """A channel to every replica named by `setting` (see the module docstring)."""
    options: list[tuple[str, object]] = [("grpc.service_config", service_config(service)), ("grpc.enable_retries", 1)]
    return open_channel(channel_target(setting), tls, options, interceptors=interceptors)
