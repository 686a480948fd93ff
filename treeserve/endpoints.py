"""Server addresses in settings: ``host:port`` lists and DNS names that resolve to many servers.

The sync (Triton's admin API, gRPC or HTTP) and the gateway (Triton inference) both accept a list
of endpoints or one DNS name (a Kubernetes headless Service) re-resolved while they run. Parsing
and resolution live here so both read them the same way.
"""

from __future__ import annotations

import ipaddress
import re
import socket

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-]*[A-Za-z0-9])?$")


def parse_endpoint(value: str) -> str:
    """``[scheme://]host:port[/]`` -> ``host:port``; ValueError naming what is wrong."""
    text = str(value).strip()
    bare = text.split("://", 1)[-1].rstrip("/")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8001)")
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        if not _HOST_RE.match(host):
            raise ValueError(f"{value!r} has an invalid host name {host!r}") from None
    return f"{host}:{int(port)}"


def parse_endpoints(values: list[str]) -> list[str]:
    """Validate a list of endpoints (non-empty, no duplicates kept); ValueError otherwise."""
    if not values:
        raise ValueError("the list is empty: give at least one host:port")
    out: list[str] = []
    for v in values:
        ep = parse_endpoint(v)
        if ep not in out:
            out.append(ep)
    return out


ADMIN_SCHEMES = ("grpc", "http")
"""Schemes an admin endpoint may carry: ``grpc://host:port``, ``http://host:port`` (or no scheme: HTTP)."""


def parse_admin_endpoint(value: str) -> str:
    """``grpc://host:port`` stays as it is (Triton's gRPC port), ``[http://]host:port`` -> ``host:port``.

    ValueError for another scheme or a bad address.
    """
    scheme, sep, _rest = str(value).strip().partition("://")
    if sep and scheme.lower() not in ADMIN_SCHEMES:
        raise ValueError(f"{value!r}: the scheme must be grpc:// or http:// (or none: HTTP)")
    endpoint = parse_endpoint(value)
    return f"grpc://{endpoint}" if sep and scheme.lower() == "grpc" else endpoint


def parse_admin_endpoints(values: list[str]) -> list[str]:
    """:func:`parse_admin_endpoint` over a non-empty list (duplicates dropped)."""
    if not values:
        raise ValueError("the list is empty: give at least one host:port")
    return list(dict.fromkeys(parse_admin_endpoint(v) for v in values))


def resolve_admin(name: str) -> list[str]:
    """:func:`resolve` keeping ``name``'s ``grpc://`` scheme on every address."""
    prefix = "grpc://" if parse_admin_endpoint(name).startswith("grpc://") else ""
    return [prefix + address for address in resolve(name)]


def resolve(name: str) -> list[str]:
    """Every address ``host:port`` resolves to, as sorted ``ip:port`` (empty when it does not resolve)."""
    host, _, port = parse_endpoint(name).rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except OSError:
        return []
    out = set()
    for family, _t, _p, _c, addr in infos:
        ip = str(addr[0])
        out.add(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return sorted(out)
