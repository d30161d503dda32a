"""Which IP addresses a server-side fetch may connect to: the rules that keep it off internal networks.

A fetch on behalf of an API caller must not become the caller's way into our network (SSRF): the cloud metadata
service, an admin port on localhost, a database on the private network. Only globally routable unicast
addresses are allowed. `allow_private` opens private and loopback ranges for tests and intranet deployments;
link-local (where the metadata service lives), multicast, reserved and unspecified addresses stay closed.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.x.x.x to the local host


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries to the same host (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(address: str, *, allow_private: bool = False) -> str | None:
    """Why a connection to `address` is refused ("a loopback address"), or None when it is allowed."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
        return refusal(str(inner), allow_private=allow_private)
    always_refused = (
        ("an unspecified", ip.is_unspecified or ip in _THIS_NETWORK),
        ("a multicast", ip.is_multicast),
        ("a link-local", ip.is_link_local),
        ("a reserved", ip.is_reserved and not ip.is_loopback),  # IPv6 ::1 lies in the reserved ::/8
    )
    for kind, matches in always_refused:
        if matches:
            return f"{kind} address"
    if allow_private:
        return None
    for kind, matches in (("a loopback", ip.is_loopback), ("a private", ip.is_private),
                          ("a site-local", isinstance(ip, IPv6Address) and ip.is_site_local),
                          ("a non-public", not ip.is_global)):
        if matches:
            return f"{kind} address"
    return None
