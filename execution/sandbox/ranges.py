"""The addresses a network-on jail may not reach (SANDBOX.md case 25), besides the host's own.

Listed rather than taken from ipaddress's is_private, which also covers 198.18.0.0/15,
the benchmarking range the tests' hosts live in.
"""

import ipaddress

BLOCKED_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    # Multicast and the reserved range (with the broadcast address): never a destination
    # on the internet.
    "224.0.0.0/4",
    "240.0.0.0/4",
)
# Jails get no IPv6 route at all; these are named so the rules read as the policy does.
BLOCKED_V6 = ("::1/128", "fc00::/7", "fe80::/10")


def unreachable_because(address: str) -> str | None:
    """Why a jail cannot reach `address` (an IP address), or None if it can."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        return "jails have no IPv6 route"
    for network in BLOCKED_V4:
        if ip in ipaddress.ip_network(network):
            return f"{network} is blocked for jails"
    return None
