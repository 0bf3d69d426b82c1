"""Which URLs and IP addresses a user-supplied source may point at (SSRF policy, no network).

The API checks a source URL with `check_url` at submit time; the worker runs the same check
again, resolves the host once and passes every answer through `check_addresses` before it
connects to one of those exact addresses (`workers/fetch.py`). One parser serves both sides,
so the host we vet is the host we reach.

Addresses are judged by value, never by string: `http://2130706433/`, `http://0177.1/` and
`http://[::ffff:7f00:1]/` are all 127.0.0.1 and are all refused. Operators who really want to
fetch from a private network list it in SPEECHBATCH_ALLOW_PRIVATE_NETWORKS (`parse_allowlist`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from urllib.parse import urlsplit

import idna

from jobs.error_codes import ErrorCode

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
Allowlist = tuple[IPNetwork, ...]

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
ALLOW_HINT = "if the host is yours, add its network to SPEECHBATCH_ALLOW_PRIVATE_NETWORKS"

# First match wins, so the narrow, better-named ranges come before the ranges holding them.
_V4_BLOCKED = tuple(
    (IPv4Network(net), reason)
    for net, reason in (
        ("255.255.255.255/32", "the broadcast address"),
        ("0.0.0.0/8", "the unspecified / 'this network' range"),
        ("10.0.0.0/8", "a private network"),
        ("100.64.0.0/10", "carrier-grade NAT space"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.169.254/32", "the cloud metadata service"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "a private network"),
        ("192.0.0.0/24", "IETF protocol space (holds Oracle Cloud's metadata service)"),
        ("192.0.2.0/24", "documentation space"),
        ("192.88.99.0/24", "the retired 6to4 relay range"),
        ("192.168.0.0/16", "a private network"),
        ("198.18.0.0/15", "benchmarking space"),
        ("198.51.100.0/24", "documentation space"),
        ("203.0.113.0/24", "documentation space"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved space"),
    )
)
_V6_BLOCKED = tuple(
    (IPv6Network(net), reason)
    for net, reason in (
        ("::/128", "the unspecified address"),
        ("::1/128", "loopback"),
        ("fd00:ec2::254/128", "the AWS metadata service"),
        ("fc00::/7", "a private (unique local) network"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "the retired site-local range"),
        ("ff00::/8", "multicast"),
        ("100::/64", "the discard range"),
        ("2001:db8::/32", "documentation space"),
        ("64:ff9b:1::/48", "local NAT64 space"),
    )
)
# IPv6 forms that carry an IPv4 address a gateway may deliver to: judge that address instead.
_NAT64 = IPv6Network("64:ff9b::/96")
_V4_COMPATIBLE = IPv6Network("::/96")
_GLOBAL_UNICAST = IPv6Network("2000::/3")

# The WHATWG URL standard's "ends in a number" test: such a host must parse as IPv4 or fail.
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")
_DECIMAL = re.compile(r"^(?:0|[1-9][0-9]*)$")
_OCTAL = re.compile(r"^0[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-f]*$")
_HOST_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


class UnsafeUrl(ValueError):
    """A source URL we refuse; `code` is stable, the message is a sentence without the query."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedSource:
    """A vetted URL: what to connect to and what to send."""

    scheme: str
    host: str  # lowercase ASCII (IDNA), IPv6 without brackets
    port: int
    target: str  # path + query: the request target we send
    ip: IPAddress | None = None  # set when the host was an IP literal

    @property
    def authority(self) -> str:
        """The `Host` header value: the host, bracketed if IPv6, with a non-default port."""
        host = f"[{self.host}]" if isinstance(self.ip, IPv6Address) else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"

    @property
    def redacted(self) -> str:
        """scheme://host/path, for messages: queries often hold presigned signatures."""
        return f"{self.scheme}://{self.authority}{self.target.partition('?')[0]}"


def parse_allowlist(value: str) -> Allowlist:
    """Comma-separated CIDRs or single IPs (`10.0.0.0/8, 127.0.0.1`) as networks."""
    networks: list[IPNetwork] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        try:
            networks.append(ip_network(part))
        except ValueError as exc:
            raise ValueError(
                f"SPEECHBATCH_ALLOW_PRIVATE_NETWORKS entry {part!r} is not a CIDR or IP address "
                f"({exc}); write e.g. 10.0.0.0/8 or 127.0.0.1, separated by commas."
            ) from None
    return tuple(networks)


def _embedded_ipv4(ip: IPv6Address) -> list[IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _V4_COMPATIBLE or ip in _NAT64:
        return [IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    return []


def _v4_reason(ip: IPv4Address) -> str | None:
    for net, reason in _V4_BLOCKED:
        if ip in net:
            return f"{reason} ({net})"
    return None if ip.is_global else "not a public address"


def _v6_reason(ip: IPv6Address, allow: Allowlist) -> str | None:
    for net, reason in _V6_BLOCKED:
        if ip in net:
            return f"{reason} ({net})"
    inner = _embedded_ipv4(ip)
    for v4 in inner:
        why = forbidden_reason(v4, allow)
        if why is not None:
            return f"an IPv6 form of {v4}, which is {why}"
    if inner or ip in _GLOBAL_UNICAST:
        return None
    return "reserved IPv6 space"


def forbidden_reason(ip: IPAddress, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why a connection to `ip` is refused, or None when it is allowed."""
    allowed = tuple(allow)
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    return _v4_reason(ip) if isinstance(ip, IPv4Address) else _v6_reason(ip, allowed)


def check_addresses(host: str, addresses: Sequence[IPAddress], allow: Allowlist) -> None:
    """Refuse `host` if ANY address it resolved to is forbidden (mixed answers = rebinding)."""
    for ip in addresses:
        reason = forbidden_reason(ip, allow)
        if reason is not None:
            raise UnsafeUrl(
                ErrorCode.FORBIDDEN_ADDRESS,
                f"{host} resolves to {ip}, which is {reason}; {ALLOW_HINT}.",
            )


def _parse_ipv4(host: str) -> IPv4Address | None:
    """inet_aton's reading of `host` (decimal/octal/hex parts, 1-4 of them), or None."""
    parts = host.split(".")
    if not _NUMERIC_LABEL.match(parts[-1]):
        return None
    if len(parts) > 4:
        raise UnsafeUrl(
            ErrorCode.BAD_URL, f"Host {host!r} looks like an IPv4 address but has 5+ parts."
        )
    values: list[int] = []
    for part in parts:
        # Explicit patterns, because int() would also accept '1_0', '+1' and ' 1'.
        if _HEX.match(part):
            values.append(int(part[2:] or "0", 16))
        elif _OCTAL.match(part):
            values.append(int(part, 8))
        elif _DECIMAL.match(part):
            values.append(int(part))
        else:
            raise UnsafeUrl(ErrorCode.BAD_URL, f"Host {host!r} is not a valid IPv4 address.")
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        raise UnsafeUrl(ErrorCode.BAD_URL, f"Host {host!r} is out of range for an IPv4 address.")
    number = last
    for index, value in enumerate(head):
        number += value << (8 * (3 - index))
    return IPv4Address(number)


def _split_netloc(netloc: str) -> tuple[str, str]:
    """(host, port text) from `host[:port]` or `[v6][:port]`."""
    if netloc.startswith("["):
        host, sep, rest = netloc[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UnsafeUrl(ErrorCode.BAD_URL, "The URL's bracketed IPv6 host is malformed.")
        return host, rest[1:]
    host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
    return host, port


def _ascii_host(host: str) -> str:
    """The lowercase ASCII form of a host name (IDNA/UTS46 maps fullwidth dots and digits)."""
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii") if not host.isascii() else host
    except idna.IDNAError:
        raise UnsafeUrl(
            ErrorCode.BAD_URL, "The URL's host is not a valid international name."
        ) from None
    ascii_host = ascii_host.lower().removesuffix(".")
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise UnsafeUrl(ErrorCode.BAD_URL, f"Host {ascii_host!r} is not a valid host name.")
    return ascii_host


def _parse_authority(netloc: str, default_port: int) -> tuple[str, int, IPAddress | None]:
    """(ASCII host, port, IP if the host is a literal) from the URL's `host[:port]`."""
    raw_host, port_text = _split_netloc(netloc)
    if not raw_host:
        raise UnsafeUrl(ErrorCode.BAD_URL, "The URL has no host.")
    if "%" in raw_host:
        raise UnsafeUrl(
            ErrorCode.BAD_URL, "The URL's host contains '%' (encoded hosts or zone ids)."
        )
    if port_text and not (port_text.isdigit() and port_text.isascii()):
        raise UnsafeUrl(ErrorCode.BAD_PORT, f"Port {port_text!r} is not a number.")
    port = int(port_text) if port_text else default_port
    if not 1 <= port <= 65535:
        raise UnsafeUrl(ErrorCode.BAD_PORT, f"Port {port} is outside 1-65535.")
    if netloc.startswith("["):
        try:
            ip6 = IPv6Address(raw_host)
        except ValueError:
            raise UnsafeUrl(
                ErrorCode.BAD_URL, f"[{raw_host}] is not a valid IPv6 address."
            ) from None
        return ip6.compressed, port, ip6
    host = _ascii_host(raw_host)
    ip4 = _parse_ipv4(host)
    return (host if ip4 is None else str(ip4)), port, ip4


def check_url(url: str, allow: Allowlist = ()) -> ParsedSource:
    """Parse and vet a source URL; raise UnsafeUrl with a stable code when it is refused."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(ErrorCode.BAD_URL, f"The URL is longer than {MAX_URL_LENGTH} characters.")
    # urlsplit silently drops tabs and newlines, and browsers read '\' as '/': refuse both.
    if any(ch <= " " or ch in "\x7f\\" for ch in url):
        raise UnsafeUrl(ErrorCode.BAD_URL, "The URL contains spaces, control characters or '\\'.")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UnsafeUrl(ErrorCode.BAD_URL, "The URL cannot be parsed.") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl(
            ErrorCode.UNSUPPORTED_SCHEME,
            f"Only http:// and https:// sources are fetched, not {scheme!r}.",
        )
    if "@" in parts.netloc:
        raise UnsafeUrl(
            ErrorCode.CREDENTIALS_IN_URL,
            "The URL carries a user name or password ('user:pass@'); use a presigned URL instead.",
        )
    host, port, ip = _parse_authority(parts.netloc, DEFAULT_PORTS[scheme])
    if ip is not None:
        reason = forbidden_reason(ip, allow)
        if reason is not None:
            raise UnsafeUrl(ErrorCode.FORBIDDEN_ADDRESS, f"{ip} is {reason}; {ALLOW_HINT}.")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ParsedSource(scheme=scheme, host=host, port=port, target=target, ip=ip)
