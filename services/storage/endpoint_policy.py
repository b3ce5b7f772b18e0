"""Which endpoints a backend added at run time may point at (SSRF guard).

A backend added through PutBackend makes the storage service connect wherever its endpoint
points, with its own network position. So an endpoint is resolved here, with the resolver the
service will connect through, and refused when any address it resolves to is loopback,
link-local (169.254.0.0/16 holds the cloud metadata service), private (RFC 1918, CGNAT, IPv6 ULA),
unspecified, multicast or reserved -- IPv4 hidden in IPv6 (`::ffff:127.0.0.1`, NAT64, 6to4)
included -- unless the operator allowlisted it. Hosts written as one number or in octal/hex
(`2130706433`, `0x7f.1`, `017700000001`), which resolvers quietly turn into addresses, are
refused outright.

The check runs in the storage service, not the gateway, because it must hold for every caller
(the gateway, `rag config backends add`, any gRPC client) and must be made by the process that
connects: it runs again each time a client for the backend is built, so a name that resolved to a
public address when the backend was added and later rebinds to a private one is refused then.
Between two builds, a long-lived connection pool could still follow a rebinding; the storage
pod's egress NetworkPolicy (k8s/base/network-policies.yaml), which excludes link-local and the
private ranges, is the second layer.

Always allowed: the default backend's own `host:port` (the operator configured it, e.g. the local
stack's loopback SeaweedFS), and whatever `DDNRAG_STORAGE_ENDPOINT_ALLOWLIST` names: CIDRs
(`10.20.0.0/16`), host names (`infinia.lab`) or `host:port` pairs.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kernel.errors import ErrorKind, ServiceError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Host names that are numbers in disguise: decimal, octal or hex parts, or fewer than four parts.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}\.?$", re.IGNORECASE)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to now (blocking: run it in an executor)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _refused(message: str, endpoint: str) -> ServiceError:
    return ServiceError(
        ErrorKind.INVALID_ARGUMENT, message, reason="ENDPOINT_NOT_ALLOWED", metadata={"endpoint": endpoint[:200]}
    )


def embedded_ipv4(addr: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    return None


def why_internal(addr: Address) -> str:
    """Why `addr` is not a public address ("" when it is)."""
    inner = embedded_ipv4(addr)
    if inner is not None:
        why = why_internal(inner)
        return f"{why} (inside the IPv6 address {addr})" if why else ""
    checks = (
        ("loopback", addr.is_loopback),
        ("link-local (cloud metadata lives at 169.254.169.254)", addr.is_link_local),
        ("unspecified", addr.is_unspecified),
        ("multicast", addr.is_multicast),
        ("private", addr.is_private or (isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT)),
        ("reserved", addr.is_reserved),
    )
    return next((name for name, hit in checks if hit), "")


@dataclass(frozen=True)
class EndpointPolicy:
    """The operator's allowlist plus the default backend's own `host:port`."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def build(
        cls, allowlist: Iterable[str], default_endpoint: str = "", resolver: Resolver | None = None
    ) -> EndpointPolicy:
        networks, hosts, host_ports = [], set(), set()
        for raw in (e.strip() for e in allowlist):
            if not raw:
                continue
            try:
                networks.append(ipaddress.ip_network(raw, strict=False))
                continue
            except ValueError:
                pass
            host, sep, port = raw.rpartition(":")
            if sep and port.isdigit() and not host.endswith(":"):
                host_ports.add((host.strip("[]").lower(), int(port)))
            else:
                hosts.add(raw.strip("[]").lower())
        if default_endpoint:
            host, port = split_endpoint(default_endpoint)
            host_ports.add((host, port))
        return cls(tuple(networks), frozenset(hosts), frozenset(host_ports), resolver or system_resolver)

    def check(self, endpoint: str) -> None:
        """Raises INVALID_ARGUMENT (ENDPOINT_NOT_ALLOWED) for an endpoint the service must not
        reach; blocking (it resolves the name)."""
        if not endpoint:
            return  # the kind's public default (AWS S3), never an internal address
        host, port = split_endpoint(endpoint)
        if (host, port) in self.host_ports or host in self.hosts:
            return
        if _NUMERIC_HOST.match(host) and not _is_dotted_quad(host):
            raise _refused(
                f"the endpoint host {host!r} is an address written as a number; write the address as "
                "a.b.c.d, or use a name",
                endpoint=endpoint,
            )
        try:
            addresses = [ipaddress.ip_address(host)] if _is_literal(host) else self._resolve(host, port)
        except OSError as err:
            raise _refused(
                f"the endpoint host {host!r} does not resolve ({err.strerror or err}); check the name",
                endpoint=endpoint,
            ) from None
        for addr in addresses:
            if any(addr in net for net in self.networks):
                continue
            inner = embedded_ipv4(addr)
            if inner is not None and any(inner in net for net in self.networks):
                continue
            why = why_internal(addr)
            if why:
                raise _refused(
                    f"the endpoint {endpoint} resolves to {addr}, a {why} address; backends added at run time may "
                    "only reach public addresses unless the operator lists it in DDNRAG_STORAGE_ENDPOINT_ALLOWLIST",
                    endpoint=endpoint,
                )

    def _resolve(self, host: str, port: int) -> list[Address]:
        found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(host, port)]
        if not found:
            raise OSError(0, "no address")
        return found


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """(lower-case host, port) of an http(s) URL; the port defaults by scheme."""
    u = urlsplit(endpoint)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise _refused(f"the endpoint {endpoint!r} must be an http:// or https:// URL with a host", endpoint=endpoint)
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise _refused(f"the endpoint {endpoint!r} has an invalid port", endpoint=endpoint) from None
    return u.hostname.lower(), port


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_dotted_quad(host: str) -> bool:
    parts = host.rstrip(".").split(".")
    return len(parts) == 4 and all(p.isdigit() and (p == "0" or not p.startswith("0")) and int(p) < 256 for p in parts)
