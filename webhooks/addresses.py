"""Where a webhook may point, checked at creation and again at every attempt.

A URL is http or https, its host one of STEPWELL_WEBHOOK_HOSTS when that is set (names
and CIDRs; any other host is refused without being resolved), and every address its host
resolves to is public: loopback and private ranges are refused unless
STEPWELL_WEBHOOK_ALLOW_PRIVATE is on; link-local, cloud metadata, multicast and
unspecified addresses always. An attempt connects to the address this check returned,
so a name that resolves elsewhere a moment later (DNS rebinding) gains nothing.

`resolve` is looked up at call time, so tests replace it: no test resolves real names.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Metadata services and link-local ranges: refused whatever the deployment allows.
ALWAYS_REFUSED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, AWS/GCP/Azure metadata 169.254.169.254
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "192.0.0.192/32",  # Oracle Cloud metadata
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",  # multicast
        "ff00::/8",
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
SCHEMES = {"http": 80, "https": 443}


class Refused(ValueError):
    """The URL may not be used; the message says why."""


@dataclass(frozen=True)
class Target:
    """Where an attempt goes: `ip` is the checked address it connects to; `host` is what
    the Host header and TLS's name check use."""

    scheme: str
    host: str
    port: int
    ip: str
    path: str  # with its query


def resolve(host: str, port: int) -> list[str]:
    """The addresses of `host` (the system's resolver)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in found))


def check(url: str) -> Target:
    """The checked Target of `url`, or Refused saying why."""
    parts = parse(url)
    host = parts.hostname or ""
    port = parts.port or SCHEMES[parts.scheme]
    if not host_listed(host):
        raise Refused(f"the host {host!r} is not one of STEPWELL_WEBHOOK_HOSTS")
    literal = ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [ipaddress.ip_address(a.partition("%")[0]) for a in resolve(host, port)]
        except (OSError, UnicodeError, ValueError):
            raise Refused(f"the host {host!r} does not resolve") from None
    if not addresses:
        raise Refused(f"the host {host!r} does not resolve")
    for address in addresses:
        why = refusal(address)
        if why:
            raise Refused(f"the host {host!r} resolves to {address}, {why}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port, str(addresses[0]), path)


def parse(url: str) -> SplitResult:
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise Refused("the URL holds whitespace or control characters")
    if not url.isascii():
        raise Refused("the URL must be ASCII: percent-encode the path, punycode the host")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise Refused(f"the URL is malformed: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise Refused("the URL must start with http:// or https://")
    if not parts.hostname:
        raise Refused("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise Refused("the URL may not hold a user name or password")
    if parts.fragment:
        raise Refused("the URL may not have a #fragment")
    return parts


def ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def host_listed(host: str) -> bool:
    """Whether STEPWELL_WEBHOOK_HOSTS (if set) allows `host`, decided without resolving."""
    allowed = settings.STEPWELL_WEBHOOK_HOSTS
    if not allowed:
        return True
    literal = ip_literal(host)
    for item in allowed:
        if literal is None:
            if host.lower().rstrip(".") == item.lower().rstrip("."):
                return True
            continue
        try:
            if literal in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue  # a name: no IP literal matches it
    return False


def refusal(address: Address) -> str:
    """Why an attempt may not go to `address`, or ""."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if any(address in network for network in ALWAYS_REFUSED if network.version == address.version):
        return "a link-local, metadata or reserved address"
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        return "a link-local, metadata or reserved address"
    public = address.is_global and not address.is_loopback
    if not public and not settings.STEPWELL_WEBHOOK_ALLOW_PRIVATE:
        return "a loopback or private address (STEPWELL_WEBHOOK_ALLOW_PRIVATE is off)"
    return ""
