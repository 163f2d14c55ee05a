"""Fetch a URL a user gave, for upload into Dust, without letting it reach what it must not (SSRF).

Written here on aiohttp, the bridge's HTTP client, rather than taken from PyPI: safehttpx checks names
against Google's public DNS and reads the whole body, drawbridge and ssrfguard wrap httpx, advocate
wraps requests (synchronous, last released in 2020). Each would bring a second HTTP stack into the
runtime for what is a page of code here, and none bounds a streamed body by size and total time.
aiohttp takes a resolver for its connector, which is all that pinning the vetted address needs.

The rules, for the URL given and again from scratch for every redirect (at most `max_redirects`):

1. Shape: https only (http too with BRIDGE_URL_FETCH_ALLOW_HTTP), no user name or password, a valid
   port; the connection goes to the port the URL names (443, or 80 for http, when it names none).
2. Addresses: a name is resolved once (`resolve_host`, in the loop's executor); a literal IP is read
   as is, the legacy numeric forms too (2130706433, 0x7f.1, 0177.0.0.1, 127.1), and those forms are
   refused even when public. One blocked address refuses the URL (fail closed): see `blocked_reason`
   for the list. `allowed_networks` (BRIDGE_URL_FETCH_ALLOW_NETWORKS, dangerous: tests and private
   deployments) lets an address pass its own checks, never those of an IPv4 address it embeds
   (IPv4-mapped, -compatible, -translated, 6to4, NAT64, Teredo).
3. Pinning: the connector's resolver (`_PinnedResolver`) answers only with the addresses vetted for
   that host and port and looks nothing up, so no second lookup can be rebound to another address
   (DNS rebinding). TLS still checks the URL's host name (SNI and certificate): aiohttp takes the
   server name from the URL, not from the resolver.
4. Bounds: one deadline (BRIDGE_URL_FETCH_TIMEOUT_SECONDS) over resolving, connecting, every hop and
   the whole body, and a connect timeout per connection; a Content-Length above `max_bytes` is
   refused before reading, and the body is cut off as soon as it passes `max_bytes`.

Errors (bridge.errors): UrlNotAllowed (url_not_allowed; the message names the rule), UrlTooLarge
(url_too_large), UrlUnreachable (url_unreachable), UrlTimeout (url_timeout), UrlHttpError
(url_http_error, naming the status). No message echoes the URL (its query may hold a token, its
user info a password) or an address a name resolved to; log lines name the host and the rule only.
"""

from __future__ import annotations

import asyncio
import http
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from bridge import __version__
from bridge.errors import BridgeError, InvalidInput, Unavailable, UpstreamFailure
from bridge.uploads.mime import InvalidFileName, sanitize_filename

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_T = TypeVar("_T")

CONNECT_TIMEOUT_SECONDS = 10.0
DEFAULT_FILENAME = "download"
MAX_FILENAME_CHARS = 255
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# identity: the bytes as stored (no decompression of a small answer into a huge one on our side)
_HEADERS = {"User-Agent": f"dust-mcp-bridge/{__version__}", "Accept-Encoding": "identity"}
# What socket.inet_aton might read as an IPv4 address: digits, dots, hex digits and 0x prefixes.
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")


class UrlNotAllowed(InvalidInput):
    """The URL (or a redirect) breaks a rule: scheme, user info, port, address, redirect count."""

    code = "url_not_allowed"


class UrlTooLarge(InvalidInput):
    """The file at the URL is larger than the upload limit."""

    code = "url_too_large"


class UrlUnreachable(Unavailable):
    """The URL's host does not resolve, refuses the connection, fails TLS or breaks off the body."""

    code = "url_unreachable"


class UrlTimeout(Unavailable):
    """Connecting, or the whole fetch, took longer than allowed."""

    code = "url_timeout"


class UrlHttpError(UpstreamFailure):
    """The URL answered with a status other than 2xx (after redirects); `status` is that status."""

    code = "url_http_error"

    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message or f"the URL answered HTTP {_status_text(status)}, not a file")
        self.status = status


def _status_text(status: int) -> str:
    try:
        return f"{status} ({http.HTTPStatus(status).phrase})"
    except ValueError:
        return str(status)


# ---------------------------------------------------------------------------------------------------
# Addresses


def _networks(*entries: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), label) for cidr, label in entries)


_METADATA = "a cloud metadata address"
_PRIVATE = "a private address"
_DOCUMENTATION = "a documentation address"
# Checked in order (the first match names the reason), before the ipaddress properties below.
_BLOCKED = _networks(
    ("169.254.169.254/32", _METADATA),  # AWS, GCP, Azure, OpenStack, ...
    ("fd00:ec2::254/128", _METADATA),  # AWS over IPv6
    ("100.100.100.200/32", _METADATA),  # Alibaba Cloud
    ("0.0.0.0/8", "an unspecified (this network) address"),
    ("10.0.0.0/8", _PRIVATE),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", _PRIVATE),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("192.0.2.0/24", _DOCUMENTATION),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("192.168.0.0/16", _PRIVATE),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", _DOCUMENTATION),
    ("203.0.113.0/24", _DOCUMENTATION),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("::ffff:0:0/96", "an IPv4-mapped address"),
    ("::ffff:0:0:0/96", "an IPv4-translated address"),
    ("::/96", "an IPv4-compatible address"),
    ("64:ff9b::/96", "a NAT64 address"),
    ("64:ff9b:1::/48", "a NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001::/32", "a Teredo address"),
    ("2001:db8::/32", _DOCUMENTATION),
    ("fc00::/7", "a unique local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)
_PROPERTIES = (
    ("is_loopback", "a loopback address"),
    ("is_private", _PRIVATE),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
    ("is_unspecified", "the unspecified address"),
    ("is_reserved", "a reserved address"),
)
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def blocked_reason(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why `address` may not be fetched ("a loopback address", ...), or None when it may.

    Blocked: private, loopback, link-local, multicast, unspecified, reserved and every other
    non-global address (the `ipaddress` properties), plus the explicit list above: CGNAT 100.64/10,
    benchmarking 198.18/15, 192.0.0/24, broadcast, cloud metadata, ULA fc00::/7, fe80::/10, ff00::/8,
    NAT64, Teredo, IPv4-mapped, -compatible and -translated. Every IPv4 address embedded in an IPv6
    one (those forms, 6to4 2002::/16) is checked too, so a public-looking wrapper hides nothing. An
    address inside `allowed` passes its own checks, never those of what it embeds.
    """
    for inner in embedded_ipv4(address):
        inner_reason = blocked_reason(inner, allowed)
        if inner_reason is not None:
            return f"an IPv6 address embedding {inner_reason}"
    if any(address in network for network in allowed):
        return None
    for network, label in _BLOCKED:
        if address in network:
            return label
    for name, label in _PROPERTIES:
        if getattr(address, name):
            return label
    return None if address.is_global else "a non-public address"


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped, -compatible, -translated, 6to4,
    Teredo (server and client), NAT64 (64:ff9b::/96; 64:ff9b:1::/48 read in RFC 6052's /96 and /48
    layouts)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    value = int(address)
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    found += list(address.teredo or ())
    last32 = ipaddress.IPv4Address(value & 0xFFFF_FFFF)
    if (address in _COMPATIBLE and value > 1) or any(address in n for n in (_TRANSLATED, _NAT64)):
        found.append(last32)
    if address in _NAT64_LOCAL:
        # The translator's layout is unknown: read both, skipping a reading of zeros (the other layout's
        # unused bits) unless both are.
        layout48 = ipaddress.IPv4Address(((value >> 64) & 0xFFFF) << 16 | ((value >> 40) & 0xFFFF))
        found += [reading for reading in (last32, layout48) if int(reading)] or [last32]
    return found


def literal_address(host: str) -> tuple[IPAddress, bool] | None:
    """The address a literal host names and whether it is written the standard way, or None for a name.

    Reads what `socket.inet_aton` (and so getaddrinfo) would read as IPv4 too: 2130706433, 0x7f.1,
    0177.0.0.1, 127.1, which are not standard.
    """
    try:
        return ipaddress.ip_address(host), True
    except ValueError:
        pass
    if not _NUMERIC_HOST.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host)), False
    except OSError:
        return None


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, looked up once (getaddrinfo in the loop's executor: the
    event loop never blocks). The only lookup this module makes; tests replace it.

    Raises:
        OSError: the name does not resolve.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(str(sockaddr[0]))
            if address not in addresses:
                addresses.append(address)
    return addresses


class _PinnedResolver(AbstractResolver):
    """The connector's resolver: answers only with the addresses vetted for a host and port, and
    never looks anything up (a second lookup is what DNS rebinding exploits)."""

    def __init__(self) -> None:
        self._pins: dict[tuple[str, int], tuple[IPAddress, ...]] = {}

    def pin(self, host: str, port: int, addresses: tuple[IPAddress, ...]) -> None:
        self._pins[(host.lower(), port)] = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET if address.version == 4 else socket.AF_INET6,
                "proto": socket.IPPROTO_TCP,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for address in self._pins.get((host.lower(), port), ())
        ]
        results = [r for r in results if family in (socket.AF_UNSPEC, r["family"])]
        if not results:
            raise OSError("no vetted address for this host and port")
        return results

    async def close(self) -> None:
        self._pins.clear()


# ---------------------------------------------------------------------------------------------------
# Policy and result


class UrlFetchSettings(Protocol):
    """The settings `FetchPolicy.from_settings` reads (bridge.config.Settings has them)."""

    @property
    def url_fetch_allow_http(self) -> bool: ...

    @property
    def url_fetch_allow_networks(self) -> Sequence[IPNetwork]: ...

    @property
    def url_fetch_timeout_seconds(self) -> float: ...


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch may do: http or only https, which private networks are exempt (dangerous), the
    time for the whole fetch, the largest body (the upload cap) and the most redirects followed."""

    allow_http: bool
    allowed_networks: tuple[IPNetwork, ...]
    timeout_seconds: float
    max_bytes: int
    max_redirects: int = 5

    def __post_init__(self) -> None:
        if not self.timeout_seconds > 0 or self.max_bytes < 1 or self.max_redirects < 0:
            raise ValueError("timeout_seconds must be > 0, max_bytes >= 1 and max_redirects >= 0")

    @classmethod
    def from_settings(cls, settings: UrlFetchSettings, max_bytes: int) -> FetchPolicy:
        return cls(
            allow_http=settings.url_fetch_allow_http,
            allowed_networks=tuple(settings.url_fetch_allow_networks),
            timeout_seconds=settings.url_fetch_timeout_seconds,
            max_bytes=max_bytes,
        )


@dataclass(frozen=True)
class FetchedFile:
    """What the final answer says about the file: its URL (after redirects), a safe file name (from
    Content-Disposition, else the last path segment, else "download"), its declared type without
    parameters, and its declared size (Content-Length), if any."""

    url: str
    filename: str
    content_type: str | None
    size_hint: int | None


@dataclass(frozen=True)
class _Deadline:
    """One deadline (loop time) for the whole fetch."""

    at: float
    seconds: float

    async def run(self, awaitable: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout_at(self.at):
                return await awaitable
        except TimeoutError:
            raise UrlTimeout(
                f"fetching the URL took longer than the {self.seconds:g} s allowed for the whole download"
            ) from None


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


# ---------------------------------------------------------------------------------------------------
# Fetching


@asynccontextmanager
async def fetch_url(url: str, policy: FetchPolicy) -> AsyncIterator[tuple[FetchedFile, AsyncIterator[bytes]]]:
    """Open `url` under `policy`: yields what the final answer says about the file and an iterator of
    its body's chunks, which stops with UrlTooLarge past `policy.max_bytes` and UrlTimeout past the
    deadline. Everything (session, connection) is closed when the block ends.

    Raises:
        UrlNotAllowed, UrlTooLarge, UrlUnreachable, UrlTimeout, UrlHttpError: see the module docstring.
    """
    loop = asyncio.get_running_loop()
    deadline = _Deadline(loop.time() + policy.timeout_seconds, policy.timeout_seconds)
    resolver = _PinnedResolver()
    async with _new_session(resolver) as session:
        response = await _open(session, resolver, url, policy, deadline)
        chunks = _chunks(response, policy.max_bytes, deadline)
        try:
            yield _describe(response), chunks
        finally:
            await chunks.aclose()
            response.close()


def _tls() -> ssl.SSLContext | bool:
    """True: aiohttp's verified default TLS context (system CAs, host name checked, made at import, so
    nothing blocks here). Tests swap in a context that trusts their own CA."""
    return True


def _new_session(resolver: _PinnedResolver) -> aiohttp.ClientSession:
    # force_close: one connection per hop, made to that hop's vetted address and closed after it.
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True, ssl=_tls())
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT_SECONDS, sock_connect=CONNECT_TIMEOUT_SECONDS
        ),
        headers=_HEADERS,
        trust_env=False,  # no proxy and no .netrc credentials from the environment
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def _open(
    session: aiohttp.ClientSession,
    resolver: _PinnedResolver,
    url: str,
    policy: FetchPolicy,
    deadline: _Deadline,
) -> aiohttp.ClientResponse:
    """Follow the redirects by hand, vetting every hop from scratch; return the final 2xx answer."""
    current = _parse(url)
    for hop in range(policy.max_redirects + 1):
        subject = "the URL" if hop == 0 else f"redirect {hop}"
        target = await deadline.run(_vet(current, policy, subject))
        resolver.pin(target.host, target.port, target.addresses)
        response = await deadline.run(_get(session, current))
        following = _next_hop(response, policy.max_bytes)
        if following is None:
            logger.debug("url fetch: %s answered %s after %d redirect(s)", target.host, response.status, hop)
            return response
        current = following
    raise UrlNotAllowed(f"the URL is not allowed: it redirects more than {policy.max_redirects} times")


def _parse(url: str) -> URL:
    try:
        return URL(url.strip())
    except (TypeError, ValueError):
        raise UrlNotAllowed("the URL is not allowed: it is not a valid URL") from None


def _refusal(subject: str, rule: str) -> UrlNotAllowed:
    return UrlNotAllowed(f"{subject} is not allowed: {rule}")


def _check_shape(url: URL, allow_http: bool, subject: str) -> tuple[str, int]:
    """The host and port to connect to, once scheme, user info, host and port pass."""
    schemes = ("https", "http") if allow_http else ("https",)
    if url.scheme not in schemes:
        raise _refusal(subject, f"only {' and '.join(schemes)} URLs may be fetched")
    if url.user is not None or url.password is not None or "@" in (url.raw_authority or ""):
        raise _refusal(subject, "URLs with a user name or password are not accepted")
    if not url.raw_host or not url.host:
        raise _refusal(subject, "it has no host")
    if url.port is None or not 0 < url.port < 65536:
        raise _refusal(subject, "its port is not valid")
    return url.raw_host, url.port


async def _vet(url: URL, policy: FetchPolicy, subject: str) -> _Target:
    """Check `url` from scratch: its shape, then every address its host is or resolves to."""
    host, port = _check_shape(url, policy.allow_http, subject)
    literal = literal_address(url.host or "")
    if literal is not None:
        address, standard = literal
        _refuse_blocked(host, (address,), policy, subject, "its host is")
        if not standard:
            raise _refusal(subject, "its host is an IP address in a non-standard form (use a.b.c.d)")
        return _Target(host, port, (address,))
    try:
        addresses = tuple(await resolve_host(host, port))
    except (OSError, UnicodeError, ValueError):
        logger.info("url fetch: %s does not resolve", host)
        raise UrlUnreachable(f"{subject}'s host name does not resolve") from None
    if not addresses:
        raise UrlUnreachable(f"{subject}'s host name has no address")
    _refuse_blocked(host, addresses, policy, subject, "its host name resolves to")
    return _Target(host, port, addresses)


def _refuse_blocked(
    host: str, addresses: Sequence[IPAddress], policy: FetchPolicy, subject: str, verb: str
) -> None:
    for address in addresses:
        reason = blocked_reason(address, policy.allowed_networks)
        if reason is not None:
            logger.warning("url fetch refused: %s %s %s", host, verb, reason)
            raise _refusal(subject, f"{verb} {reason}; only public addresses may be fetched")


async def _get(session: aiohttp.ClientSession, url: URL) -> aiohttp.ClientResponse:
    try:
        return await session.get(url, allow_redirects=False)
    except aiohttp.ServerTimeoutError:
        raise UrlTimeout(
            f"the URL's server did not accept a connection within {CONNECT_TIMEOUT_SECONDS:g} s"
        ) from None
    except aiohttp.ClientSSLError:
        raise UrlUnreachable(
            "the URL's server failed TLS verification (its certificate is not trusted or not for its host)"
        ) from None
    except aiohttp.ClientError as exc:
        logger.info("url fetch: no answer from %s (%s)", url.host, type(exc).__name__)
        raise UrlUnreachable("could not get an answer from the URL's server") from None


def _next_hop(response: aiohttp.ClientResponse, max_bytes: int) -> URL | None:
    """Where a redirect points (the response is then closed), or None for a final 2xx answer whose
    declared size fits. Closes the response before raising."""
    try:
        following = _redirect_target(response)
        if following is None:
            _check_answer(response, max_bytes)
    except BridgeError:
        response.close()
        raise
    if following is not None:
        response.close()
    return following


def _redirect_target(response: aiohttp.ClientResponse) -> URL | None:
    if response.status not in _REDIRECTS:
        return None
    location = response.headers.get(aiohttp.hdrs.LOCATION, "").strip()
    if not location:
        raise UrlHttpError(
            response.status, f"the URL answered HTTP {_status_text(response.status)} without a Location"
        )
    try:
        return response.url.join(URL(location))
    except (TypeError, ValueError):
        raise UrlNotAllowed("a redirect is not allowed: its Location is not a valid URL") from None


def _check_answer(response: aiohttp.ClientResponse, max_bytes: int) -> None:
    if not 200 <= response.status < 300:
        raise UrlHttpError(response.status)
    if response.content_length is not None and response.content_length > max_bytes:
        raise _too_large(max_bytes)


def _too_large(max_bytes: int) -> UrlTooLarge:
    return UrlTooLarge(f"the file at the URL is larger than the upload limit ({max_bytes} bytes)")


async def _chunks(
    response: aiohttp.ClientResponse, max_bytes: int, deadline: _Deadline
) -> AsyncGenerator[bytes, None]:
    received = 0
    while chunk := await deadline.run(_read(response)):
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes)
        yield chunk


async def _read(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.content.read(_CHUNK)
    except aiohttp.ClientError:
        raise UrlUnreachable("the download from the URL broke off before the end") from None


def _describe(response: aiohttp.ClientResponse) -> FetchedFile:
    declared = response.headers.get(aiohttp.hdrs.CONTENT_TYPE, "").split(";", 1)[0].strip().lower()
    return FetchedFile(
        url=str(response.url),
        filename=_filename(response),
        content_type=declared or None,
        size_hint=response.content_length,
    )


def _filename(response: aiohttp.ClientResponse) -> str:
    """Content-Disposition's filename* or filename, else the last path segment, else "download";
    sanitised (bridge.uploads.mime): no path, no control or format characters, at most 255 chars."""
    disposition = response.content_disposition
    for candidate in (disposition.filename if disposition else None, response.url.name):
        if candidate:
            try:
                return sanitize_filename(candidate)[:MAX_FILENAME_CHARS]
            except InvalidFileName:
                continue
    return DEFAULT_FILENAME
