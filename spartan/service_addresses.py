"""The address settings of the internal services: one `host:port`, or a list of replicas.

`services.presence` and `services.history` name either one `host:port`, whose DNS name
may resolve to every replica (a compose service, a Kubernetes headless Service), or a
comma-separated list of `ip:port` (the local launcher's `--replicas`). gRPC resolves a
list only of IP addresses (its `ipv4:`/`ipv6:` targets), so host names in a list are
refused with the form that works. Standard library only: config validation uses it.
"""

from __future__ import annotations

import ipaddress


class AddressError(ValueError):
    """A service address setting that names no usable address; the message says which form works."""


def addresses(value: str) -> list[str]:
    """The `host:port` entries of a setting; AddressError when one is malformed."""
    entries = [entry.strip() for entry in value.split(",")]
    if not value.strip() or not all(entries):
        raise AddressError(f"expected host:port or a comma-separated list of ip:port, got {value!r}")
    for entry in entries:
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise AddressError(f"expected host:port, got {entry!r}")
    if len(entries) > 1:
        kinds = {_ip_kind(entry) for entry in entries}
        if None in kinds:
            raise AddressError(
                f"a list of addresses must be IP addresses ({value!r}); for host names use one name that "
                "resolves to every replica (a compose service, a Kubernetes headless Service)"
            )
        if len(kinds) > 1:
            raise AddressError(f"a list of addresses must be all IPv4 or all IPv6, got {value!r}")
    return entries


def channel_target(value: str) -> str:
    """The gRPC target for a setting: the address itself (DNS resolves every replica), or `ipv4:a,b`."""
    entries = addresses(value)
    if len(entries) == 1:
        return entries[0]
    return f"{_ip_kind(entries[0])}:{','.join(entries)}"


def port_of(value: str) -> int:
    """The port of the first address: where a replica listens unless `--port` says otherwise."""
    return int(addresses(value)[0].rpartition(":")[2])


def _ip_kind(entry: str) -> str | None:
    host = entry.rpartition(":")[0].strip("[]")
    try:
        return f"ipv{ipaddress.ip_address(host).version}"
    except ValueError:
        return None
