"""gRPC targets from the `*_ADDR` variables: one address, a `dns:///` name, or a list.

A comma-separated list (`127.0.0.1:50052,127.0.0.1:51052`, as `rag up --replicas 2` sets) becomes
one `ipv4:`/`ipv6:` target, so a channel holds a subchannel per replica and the round_robin
policy of `clients.base.channel_options` spreads calls over them and skips a replica that is down.
In Kubernetes a `dns:///` name of a headless Service does the same with the pods' addresses.
"""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """Whether `host` (a name or an IP literal, bracketed or not) names this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _family(entry: str) -> str:
    host, sep, port = entry.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{entry!r} is not host:port")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"{entry!r}: a list of addresses takes IP literals (127.0.0.1:50052,127.0.0.1:51052); "
            "for a host name use one dns:/// target that resolves to every replica"
        ) from None
    return "ipv4" if ip.version == 4 else "ipv6"


def grpc_target(address: str) -> str:
    """`address` as grpc takes it: unchanged unless it is a comma-separated list."""
    if "," not in address:
        return address
    entries = [e.strip() for e in address.split(",") if e.strip()]
    families = {_family(e) for e in entries}
    if len(families) != 1:
        raise ValueError(f"{address!r} mixes IPv4 and IPv6 addresses; use one family")
    return f"{families.pop()}:{','.join(entries)}"
