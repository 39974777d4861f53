"""TLS credentials for servers and channels, from the `tls` config section.

With `tls.cert`/`tls.key` set every gRPC hop uses TLS: servers present the pair,
clients and gateways verify peers against `tls.ca` (or the system roots).
`server_name` overrides the name checked against the certificate, for peers reached
by an address their certificate does not list. `explain_connect_error` turns gRPC's
connect failures into a hint about the TLS setting that is probably wrong.
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


def open_channel(
    address: str,
    tls: TlsConfig,
    options: list[tuple[str, object]] | None = None,
    *,
    server_name: str = "",
    interceptors: list[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """An aio channel to `address`, TLS when configured (checking `server_name` instead of the host if given);
    `interceptors` sign calls to internal services (spartan.rpc.service_auth)."""
    options = list(options or []) + [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    credentials = channel_credentials(tls)
    if credentials:
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


def explain_connect_error(details: str, tls: TlsConfig) -> str:
    """A hint for a failed connection, or "" when nothing points at TLS."""
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            "the server's TLS certificate is not signed by a trusted CA: pass the CA that signed it "
            "(client: --ca FILE; services: tls.ca)"
        )
    if "Hostname Verification" in details or ("Peer name" in details and "not in peer certificate" in details):
        return (
            "the server's TLS certificate is not for this host name: connect by a name the certificate lists "
            "or set the expected name (client: --server-name)"
        )
    if not (tls.enabled or tls.ca) and ("Socket closed" in details or "Connection reset" in details):
        return "if the server uses TLS, pass its CA certificate (client: --ca FILE; services: tls.ca)"
    if (tls.enabled or tls.ca) and ("WRONG_VERSION_NUMBER" in details or "handshake" in details.lower()):
        return "TLS handshake failed: is the server serving plaintext? (drop --ca / tls settings to match it)"
    return ""
