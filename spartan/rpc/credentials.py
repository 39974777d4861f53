"""TLS credentials for servers and channels, from the `tls` config section.

With `tls.cert`/`tls.key` set every gRPC hop uses TLS: servers present the pair,
clients and gateways verify peers against `tls.ca` (or the system roots).
"""
from __future__ import annotations

from pathlib import Path

import grpc

from spartan.config import TlsConfig


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials | None:
    if not tls.enabled:
        return None
    return grpc.ssl_server_credentials([(Path(tls.key).read_bytes(), Path(tls.cert).read_bytes())])


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials | None:
    if not (tls.enabled or tls.ca):
        return None
    return grpc.ssl_channel_credentials(root_certificates=Path(tls.ca).read_bytes() if tls.ca else None)


def open_channel(address: str, tls: TlsConfig, options: list[tuple[str, object]] | None = None) -> grpc.aio.Channel:
    """An aio channel to `address`, TLS when configured."""
    options = list(options or []) + [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    credentials = channel_credentials(tls)
    if credentials:
        return grpc.aio.secure_channel(address, credentials, options=options)
    return grpc.aio.insecure_channel(address, options=options)
