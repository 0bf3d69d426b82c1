"""Fetching an STT source from an http(s) URL without letting the URL reach inside our network.

`fetch_source` owns the SSRF defences of reliability.md A7 on the worker side:

- the URL passes `jobs.netpolicy.check_url` (the parser the API used at submit);
- the host is resolved ONCE and refused if ANY answer is forbidden, then we connect to that
  exact IP (the URL carries the IP, `Host` and TLS SNI carry the name, and the certificate is
  verified against the name), so a DNS answer that changes between check and connect
  (rebinding) has nothing to change;
- redirects are followed by hand, at most `MAX_REDIRECTS`, each hop checked and resolved anew;
- the body is streamed and cut at `max_bytes`, and the whole fetch at `timeout_s` wall time.

Failures map onto the provider error tree, so the pipeline retries or fails the item as usual.
Messages name `scheme://host/path` only: queries often hold presigned signatures.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urljoin

import httpx

from jobs.error_codes import ErrorCode
from jobs.media import AudioRejected, check_audio, extension_for
from jobs.netpolicy import (
    Allowlist,
    IPAddress,
    ParsedSource,
    UnsafeUrl,
    check_addresses,
    check_url,
)
from workers.deadline import Deadline
from workers.providers.base import AudioInput
from workers.providers.errors import (
    InvalidInput,
    ProviderTimeout,
    ProviderUnavailable,
    UnsupportedAudio,
)

Resolver = Callable[[str, int], Sequence[tuple[Any, ...]]]

MAX_REDIRECTS = 3
USER_AGENT = "speechbatch-source-fetch/0.1"
# A slow server is as likely to be overloaded as broken: these are worth a later attempt.
_TRANSIENT_4XX = {408, 429}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _timeout(source: ParsedSource, timeout_s: float) -> ProviderTimeout:
    return ProviderTimeout(
        f"Fetching {source.redacted} took longer than {timeout_s:g} s "
        "(SPEECHBATCH_SOURCE_TIMEOUT_SECONDS); serve it faster or upload it instead.",
        code=ErrorCode.SOURCE_TIMEOUT,
    )


def _unavailable(source: ParsedSource, why: str, status: int | None = None) -> ProviderUnavailable:
    return ProviderUnavailable(
        f"Could not fetch {source.redacted}: {why}; it will be tried again.",
        code=ErrorCode.SOURCE_UNAVAILABLE,
        status_code=status,
    )


def _too_large(source: ParsedSource, max_bytes: int) -> InvalidInput:
    return InvalidInput(
        f"{source.redacted} is larger than {max_bytes} bytes (SPEECHBATCH_MAX_SOURCE_BYTES); "
        "send a shorter recording or split it.",
        code=ErrorCode.SOURCE_TOO_LARGE,
    )


def _checked(url: str, allow: Allowlist) -> ParsedSource:
    try:
        return check_url(url, allow)
    except UnsafeUrl as exc:
        raise InvalidInput(
            f"Source URL refused: {exc.message}", code=ErrorCode.FORBIDDEN_SOURCE
        ) from None


def distinct_addresses(answers: Sequence[tuple[Any, ...]]) -> list[IPAddress]:
    """The IPv4 and IPv6 addresses of getaddrinfo answers, once each, in their order
    (shared with `workers.webhook_sender`, which vets and pins them the same way)."""
    found: dict[IPAddress, None] = {}
    for family, *_, sockaddr in answers:
        if family in (socket.AF_INET, socket.AF_INET6):
            found[ipaddress.ip_address(sockaddr[0])] = None
    return list(found)


def pinned_url(source: ParsedSource, ip: IPAddress) -> str:
    """`source`'s URL with the vetted `ip` in place of the host: what we connect to, while
    `Host` (`source.authority`) and TLS SNI (`source.host`) carry the name."""
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{source.scheme}://{literal}:{source.port}{source.target}"


def _resolve(source: ParsedSource, allow: Allowlist, resolver: Resolver) -> IPAddress:
    """The address to connect to, after vetting every address the host resolves to."""
    if source.ip is not None:
        return source.ip
    try:
        answers = resolver(source.host, source.port)
    except socket.gaierror as exc:
        if exc.errno in {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}:
            raise InvalidInput(
                f"Host {source.host} of {source.redacted} does not exist; check the URL.",
                code=ErrorCode.SOURCE_UNAVAILABLE,
            ) from None
        raise _unavailable(source, f"DNS lookup failed ({exc.strerror})") from None
    found = distinct_addresses(answers)
    if not found:
        raise _unavailable(source, f"{source.host} has no IPv4 or IPv6 address")
    try:
        check_addresses(source.host, found, allow)
    except UnsafeUrl as exc:
        raise InvalidInput(
            f"Source URL refused: {exc.message}", code=ErrorCode.FORBIDDEN_SOURCE
        ) from None
    return found[0]


def _request(source: ParsedSource, ip: IPAddress, deadline: Deadline) -> httpx.Request:
    """A GET to `ip` that presents itself (Host, SNI) as `source.host`."""
    extensions: dict[str, Any] = {"trace": deadline.trace}
    if source.ip is None and source.scheme == "https":
        extensions["sni_hostname"] = source.host
    remaining = deadline.remaining()
    return httpx.Request(
        "GET",
        pinned_url(source, ip),
        headers={
            "Host": source.authority,
            "User-Agent": USER_AGENT,
            "Accept": "audio/*, */*;q=0.1",
            # Compressed audio does not shrink; identity also rules out decompression bombs.
            "Accept-Encoding": "identity",
        },
        extensions={**extensions, "timeout": httpx.Timeout(remaining).as_dict()},
    )


@contextmanager
def _transport_errors(source: ParsedSource, deadline: Deadline, timeout_s: float) -> Iterator[None]:
    """httpx failures as our tree; after the deadline every failure is the timeout's doing."""
    try:
        yield
    except httpx.InvalidURL:
        raise InvalidInput(
            f"{source.redacted} is not a URL we can request.", code=ErrorCode.INVALID_SOURCE
        ) from None
    except httpx.HTTPError as exc:
        if deadline.expired or isinstance(exc, httpx.TimeoutException):
            raise _timeout(source, timeout_s) from None
        raise _unavailable(source, type(exc).__name__) from None


def _read_body(
    response: httpx.Response, source: ParsedSource, max_bytes: int, deadline: Deadline
) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(source, max_bytes)
    body = bytearray()
    for chunk in response.iter_bytes():  # as received, so the deadline check runs per read
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(source, max_bytes)
        if deadline.expired:
            raise httpx.ReadTimeout("source deadline passed")
    return bytes(body)


def _raise_for_status(response: httpx.Response, source: ParsedSource) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if status >= 500 or status in _TRANSIENT_4XX:
        raise _unavailable(source, f"the server answered HTTP {status}", status)
    raise InvalidInput(
        f"{source.redacted} answered HTTP {status}; check that the URL is right and not expired.",
        code=ErrorCode.SOURCE_UNAVAILABLE,
        status_code=status,
    )


def _download(
    client: httpx.Client,
    url: str,
    *,
    allow: Allowlist,
    max_bytes: int,
    timeout_s: float,
    resolver: Resolver,
    deadline: Deadline,
) -> tuple[ParsedSource, bytes]:
    for _hop in range(MAX_REDIRECTS + 1):
        source = _checked(url, allow)
        ip = _resolve(source, allow, resolver)
        if deadline.expired:
            raise _timeout(source, timeout_s)
        with _transport_errors(source, deadline, timeout_s):
            response = client.send(_request(source, ip, deadline), stream=True)
            try:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    url = urljoin(url, location)
                    continue
                _raise_for_status(response, source)
                return source, _read_body(response, source, max_bytes, deadline)
            finally:
                response.close()
    raise InvalidInput(
        f"{source.redacted} redirected more than {MAX_REDIRECTS} times; use the final URL.",
        code=ErrorCode.TOO_MANY_REDIRECTS,
    )


def _filename(source: ParsedSource, content_type: str) -> str:
    """The URL's last path segment, made safe, with an extension that matches the audio."""
    segment = unquote(source.target.partition("?")[0].rsplit("/", 1)[-1])
    name = _SAFE_NAME.sub("_", segment).strip("._")[:120] or "audio"
    return name if "." in name else f"{name}.{extension_for(content_type)}"


def fetch_source(
    url: str,
    *,
    allow: Allowlist,
    max_bytes: int,
    timeout_s: float,
    resolver: Resolver = socket.getaddrinfo,
    transport: httpx.BaseTransport | None = None,
) -> AudioInput:
    """Download an http(s) STT source safely; raise the provider error tree on failure."""
    origin = _checked(url, allow)
    deadline = Deadline(timeout_s)
    # trust_env=False: no proxy from the environment (it would resolve the name itself) and
    # no ~/.netrc credentials sent to whatever host a user names.
    client = httpx.Client(transport=transport, follow_redirects=False, trust_env=False)
    try:
        final, data = _download(
            client,
            url,
            allow=allow,
            max_bytes=max_bytes,
            timeout_s=timeout_s,
            resolver=resolver,
            deadline=deadline,
        )
    finally:
        deadline.cancel()
        client.close()
    try:
        content_type = check_audio(data[:64], f"Source {final.redacted}")
    except AudioRejected as rejected:
        raise UnsupportedAudio(rejected.message, code=rejected.code) from None
    return AudioInput(
        data=data, filename=_filename(origin, content_type), content_type=content_type
    )
