"""Container healthcheck: asks a gRPC server's standard health service whether it serves.

Docker compose has no native gRPC healthcheck and the image carries no
grpc_health_probe binary, so the compose file runs this with the image's Python:

    python /opt/spartan/healthcheck.py 127.0.0.1:3000 --service spartan.v1.Spartan

Exit status 0 when the answer is SERVING; 1 for NOT_SERVING, an unknown service
name, a timeout or nothing listening (the reason goes to stderr). With
`--tls-ca` the check uses TLS, which is also what Kubernetes needs when the
services run with TLS (the kubelet's native gRPC probe speaks plaintext only).
Standard library plus grpcio and grpcio-health-checking, both package dependencies.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 3.0, tls_ca: str = "", server_name: str = "") -> str:
    """Return the health status name (e.g. "SERVING") of `service` at `address`.

    Raises grpc.RpcError when the call itself fails (unreachable, unknown service, timeout).
    """
    if tls_ca:
        with open(tls_ca, "rb") as handle:
            credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when a gRPC server reports SERVING.")
    parser.add_argument("address", help="host:port of the gRPC server")
    parser.add_argument("--service", default="", help='service name to ask about ("" is the whole server)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument("--tls-ca", default="", help="CA bundle; when given the check uses TLS")
    parser.add_argument("--server-name", default="", help="name expected in the server certificate")
    args = parser.parse_args(argv)
    try:
        status = check(args.address, args.service, args.timeout, args.tls_ca, args.server_name)
    except grpc.RpcError as error:
        print(f"unhealthy: {args.address} {args.service!r}: {error.code().name} {error.details()}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"unhealthy: {args.address} {args.service!r}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
