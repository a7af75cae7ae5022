"""Which image URLs may be fetched, and the exact address to connect to.

A URL is fetchable only if it is ``http``/``https``, carries no credentials, and EVERY address its host resolves
to is public. Hosts are always resolved through ``getaddrinfo`` (never matched with regular expressions), so the
decimal, octal and hex spellings of an address (``2130706433``, ``0177.0.0.1``, ``0x7f.0.0.1``) are judged by the
address they really mean. Refused: private, loopback, link-local (169.254/16 with the cloud metadata address,
fe80::/10), unique-local, carrier-grade NAT, multicast, reserved and unspecified addresses, and IPv6 forms that
embed one of those (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4).

``POFLOW_IMAGE_ALLOWED_HOSTS`` (comma-separated ``host``, ``host:port``, ``[v6]:port``, IP or CIDR) permits named
hosts or address ranges anyway; tests name ``127.0.0.1``.

DNS rebinding: :func:`check_url` returns a :class:`PinnedTarget` holding the address that was checked. The fetcher
connects to that address (the URL's host is replaced by the IP literal) and sends the original name in the
``Host`` header and as TLS SNI (httpcore's ``sni_hostname`` request extension, which is also the name the
certificate is verified against). No second DNS lookup ever happens between the check and the connection.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "AllowList",
    "BlockedUrl",
    "PinnedTarget",
    "Resolver",
    "check_url",
    "is_public_address",
    "system_resolver",
]

ALLOWED_HOSTS_ENV = "POFLOW_IMAGE_ALLOWED_HOSTS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``resolver(host, port) -> addresses`` (strings); raises ``OSError`` when the name does not resolve.
Resolver = Callable[[str, int], Sequence[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class BlockedUrl(Exception):
    """A URL the policy refuses; ``reason`` is a stable code (``blocked_address``, ``bad_scheme``, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class PinnedTarget:
    """A checked URL and the address to connect to (the one that was checked)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        """The ``Host`` header for the original name (port only when not the scheme's default)."""
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if _DEFAULT_PORTS[self.scheme] == self.port else f"{name}:{self.port}"

    def connect_url(self, address: str | None = None) -> str:
        """The URL with its host replaced by ``address`` (default: the first checked address)."""
        ip = address or self.address
        literal = f"[{ip}]" if ":" in ip else ip
        parts = urlsplit(self.url)
        return urlunsplit((self.scheme, f"{literal}:{self.port}", parts.path or "/", parts.query, ""))

    def sni_hostname(self) -> str | None:
        """The TLS server name: the original host, unless it is an IP literal (no SNI for addresses)."""
        if self.scheme != "https" or _as_ip(self.host) is not None:
            return None
        return self.host


@dataclass(frozen=True)
class AllowList:
    """Hosts and networks permitted even when their addresses are not public."""

    names: frozenset[tuple[str, int | None]] = frozenset()
    networks: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> AllowList:
        """Parse ``host``, ``host:port``, ``[v6]:port``, ``IP`` or ``CIDR`` entries separated by commas."""
        names: set[tuple[str, int | None]] = set()
        networks = []
        for raw in (text or "").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            host, port = _split_entry(entry)
            try:
                networks.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                names.add((host.rstrip("."), port))
        return cls(frozenset(names), tuple(networks))

    @classmethod
    def from_env(cls) -> AllowList:
        """The allow-list named by ``POFLOW_IMAGE_ALLOWED_HOSTS`` (empty when unset)."""
        return cls.parse(os.environ.get(ALLOWED_HOSTS_ENV))

    def permits(self, host: str, port: int, address: str) -> bool:
        """True when ``host`` (by name) or ``address`` (by network) is listed for ``port``."""
        if (host, None) in self.names or (host, port) in self.names:
            return True
        ip = _unwrap(ipaddress.ip_address(address))
        return any(ip in net and p in (None, port) for net, p in self.networks if ip.version == net.version)


def _split_entry(entry: str) -> tuple[str, int | None]:
    """``[::1]:80`` -> (``::1``, 80); ``host:80`` -> (``host``, 80); a bare IPv6 or CIDR keeps its colons."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host`` (TCP), in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def _as_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address embeds (mapped, NAT64, 6to4), else the address itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def is_public_address(address: str) -> bool:
    """True only for a globally routable unicast address (embedded IPv4 forms judged by what they embed)."""
    ip = _unwrap(ipaddress.ip_address(address))
    refused = (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )
    return ip.is_global and not refused


def _parse(url: str) -> tuple[SplitResult, str, int]:
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise BlockedUrl("bad_url", f"cannot parse {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise BlockedUrl("bad_scheme", f"only http and https are fetched, not {scheme or 'no scheme'!r}")
    if parts.username is not None or parts.password is not None:
        raise BlockedUrl("credentials_in_url", "URLs with a user name or password are not fetched")
    if not host:
        raise BlockedUrl("bad_url", f"no host in {url!r}")
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii").lower() if not _as_ip(host) else host
    except UnicodeError:
        raise BlockedUrl("bad_url", f"host {host!r} is not a valid domain name") from None
    return parts, ascii_host, port or _DEFAULT_PORTS[scheme]


def check_url(url: str, *, allow: AllowList | None = None, resolver: Resolver | None = None) -> PinnedTarget:
    """Check ``url`` against the policy and return where to connect, or raise :class:`BlockedUrl`.

    ``allow`` defaults to :meth:`AllowList.from_env`; ``resolver`` to :func:`system_resolver`.
    """
    parts, host, port = _parse(url)
    allow = AllowList.from_env() if allow is None else allow
    try:
        addresses = tuple((resolver or system_resolver)(host, port))
    except (OSError, UnicodeError) as exc:
        raise BlockedUrl("dns_error", f"{host} does not resolve: {exc}") from None
    if not addresses:
        raise BlockedUrl("dns_error", f"{host} resolves to no address")
    for address in addresses:
        if not is_public_address(address) and not allow.permits(host, port, address):
            raise BlockedUrl("blocked_address", f"{host} resolves to {address}, which is not a public address")
    return PinnedTarget(
        url=urlunsplit((parts.scheme.lower(), parts.netloc, parts.path, parts.query, "")),
        scheme=parts.scheme.lower(),
        host=host,
        port=port,
        address=addresses[0],
        addresses=addresses,
    )
