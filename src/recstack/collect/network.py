"""Network facts minimised at the door: the client IP truncated or dropped, the referrer reduced to its host."""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

IPV4_PREFIX = 24
IPV6_PREFIX = 48
MAX_HOST_CHARS = 253


def minimise_ip(ip: str | None, mode: Literal["drop", "truncate"]) -> str | None:
    """``drop``: None. ``truncate``: the network address of the /24 (IPv4) or /48 (IPv6); unparsable: None."""
    if mode == "drop" or not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def referrer_host(referrer: str | None) -> str | None:
    """The host of a referrer URL, lower-cased, without port, path or query (they can carry personal data)."""
    if not referrer:
        return None
    try:
        host = urlsplit(referrer.strip()).hostname
    except ValueError:
        return None
    if not host or len(host) > MAX_HOST_CHARS:
        return None
    return host.lower()


def local_hour(client_ts_ms: int | None, tz_offset_min: int | None, received_ms: int) -> int | None:
    """The client's local hour 0-23 from its UTC time and its timezone offset in minutes (JavaScript's
    ``-Date.getTimezoneOffset()``: minutes east of UTC). None without an offset."""
    if tz_offset_min is None:
        return None
    ms = client_ts_ms if client_ts_ms is not None else received_ms
    return int(((ms // 60_000 + tz_offset_min) // 60) % 24)
