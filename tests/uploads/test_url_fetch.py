"""The URL fetcher (bridge/uploads/url_fetch.py), against real local HTTP and HTTPS servers.

The servers listen on loopback, which the guard refuses: a test reaches them only through
`allowed_networks` (127.0.0.1/32, or 127.0.0.2/32 where the refusal under test is 127.0.0.1), and
every refusal runs with no exemption covering its target. Names never reach real DNS: `resolve_host`
is replaced for every test by `FakeDns`, which answers from a table and counts the lookups. Every
aiohttp session the fetcher makes is checked closed after every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.config import ConfigError, load_settings
from bridge.errors import InvalidInput, Unavailable, UpstreamFailure
from bridge.uploads import url_fetch
from bridge.uploads.url_fetch import (
    FetchedFile,
    FetchPolicy,
    UrlHttpError,
    UrlNotAllowed,
    UrlTimeout,
    UrlTooLarge,
    UrlUnreachable,
    blocked_reason,
    fetch_url,
    literal_address,
)

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
NOTES = b"line one\nline two\n"
LOCAL = "127.0.0.1/32"
SECRET = "hunter2-s3cret"
REAL_RESOLVE_HOST = url_fetch.resolve_host  # before the autouse fixture replaces it


def policy(
    *networks: str,
    allow_http: bool = True,
    timeout: float = 10.0,
    max_bytes: int = 1_000_000,
    max_redirects: int = 5,
) -> FetchPolicy:
    return FetchPolicy(
        allow_http=allow_http,
        allowed_networks=tuple(ipaddress.ip_network(n) for n in networks),
        timeout_seconds=timeout,
        max_bytes=max_bytes,
        max_redirects=max_redirects,
    )


async def fetch_all(url: str, fetch_policy: FetchPolicy) -> tuple[FetchedFile, bytes]:
    async with fetch_url(url, fetch_policy) as (fetched, chunks):
        body = b"".join([chunk async for chunk in chunks])
    return fetched, body


# ---------------------------------------------------------------------------------------------------
# Name resolution and session bookkeeping, for every test


@dataclass
class FakeDns:
    """Stands in for `url_fetch.resolve_host`: each name has a list of successive answers (the last
    one repeats); an unknown name does not resolve. `calls` records every lookup."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    calls: list[tuple[str, int]] = field(default_factory=list)

    def set(self, host: str, *answers: list[str]) -> None:
        self.answers[host] = list(answers)

    async def __call__(self, host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        self.calls.append((host, port))
        answers = self.answers.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        seen = sum(1 for name, _ in self.calls if name == host)
        return [ipaddress.ip_address(a) for a in answers[min(seen, len(answers)) - 1]]


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns()
    monkeypatch.setattr(url_fetch, "resolve_host", fake)
    return fake


@pytest.fixture(autouse=True)
def sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[aiohttp.ClientSession]]:
    """Every session the fetcher opens; each must be closed when the test ends."""
    made: list[aiohttp.ClientSession] = []
    original = url_fetch._new_session

    def recording(resolver: Any) -> aiohttp.ClientSession:
        session = original(resolver)
        made.append(session)
        return session

    monkeypatch.setattr(url_fetch, "_new_session", recording)
    yield made
    assert all(session.closed for session in made), "an aiohttp session was left open"


# ---------------------------------------------------------------------------------------------------
# The local server


@dataclass
class Server:
    host: str
    port: int
    runner: web.AppRunner
    scheme: str = "http"
    seen: list[tuple[str, str]] = field(default_factory=list)  # (path with query, Host header)
    sni: list[str | None] = field(default_factory=list)

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def connections(self) -> int:
        server = self.runner.server
        return len(server.connections) if server is not None else 0

    async def wait_no_connections(self) -> None:
        with anyio.fail_after(5):
            while self.connections():
                await asyncio.sleep(0.01)


def make_app(server: list[Server]) -> web.Application:
    """The routes: files, redirects, refusals in waiting, and bodies too large or too slow."""
    routes = web.RouteTableDef()

    @web.middleware
    async def record(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        server[0].seen.append((request.path_qs, request.headers.get("Host", "")))
        return await handler(request)

    @routes.get("/files/report.pdf")
    async def report(_: web.Request) -> web.Response:
        disposition = "attachment; filename=\"fallback.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20final.pdf"
        return web.Response(
            body=PDF,
            headers={"Content-Disposition": disposition, "Content-Type": "application/pdf; name=x"},
        )

    @routes.get("/files/notes.txt")
    async def notes(_: web.Request) -> web.Response:
        return web.Response(body=NOTES, headers={"Content-Type": "Text/Plain; charset=utf-8"})

    @routes.get("/files/")
    async def nameless(_: web.Request) -> web.Response:
        return web.Response(body=b"no name")

    @routes.get("/files/evil")
    async def evil(request: web.Request) -> web.Response:
        name = request.query.get("name", "..%2F..%2Fetc%2Fpass%07wd")
        return web.Response(
            body=b"x", headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"}
        )

    @routes.get("/redirect/{n}")
    async def chain(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        location = f"/redirect/{left - 1}" if left > 1 else "/files/report.pdf"
        raise web.HTTPFound(location)

    @routes.get("/relative/a/b")
    async def relative(_: web.Request) -> web.Response:
        raise web.HTTPFound("../../files/notes.txt")

    @routes.get("/to")
    async def to(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query["location"]})

    @routes.get("/no-location")
    async def no_location(_: web.Request) -> web.Response:
        return web.Response(status=302)

    @routes.get("/missing")
    async def missing(_: web.Request) -> web.Response:
        return web.Response(status=404, text=f"not here {SECRET}")

    @routes.get("/big-declared")
    async def big_declared(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 50_000
        await response.prepare(request)
        await response.write(b"d" * 1000)
        await asyncio.Event().wait()  # the rest never comes: the client must not wait for it
        return response

    @routes.get("/big-chunked")
    async def big_chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(200):
            await response.write(b"c" * 1024)
        return response

    @routes.get("/sized/{n}")
    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"s" * int(request.match_info["n"]))

    @routes.get("/drip")
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while True:  # endless, one byte at a time
            await response.write(b".")
            await asyncio.sleep(0.02)

    @routes.get("/hang")
    async def hang(_: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application(middlewares=[record])
    app.add_routes(routes)
    return app


@contextlib.asynccontextmanager
async def serving(
    host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    holder: list[Server] = []
    runner = web.AppRunner(make_app(holder), shutdown_timeout=1.0, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)  # port 0: no race for a free port
    await site.start()  # listening once this returns: nothing to wait for
    port = int(runner.addresses[0][1])
    holder.append(Server(host, port, runner, scheme="https" if ssl_context else "http"))
    try:
        yield holder[0]
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with serving() as running:
        yield running


@pytest.fixture
async def server2() -> AsyncIterator[Server]:
    """The same server on 127.0.0.2, for refusals of 127.0.0.1 (Linux routes all of 127/8 to lo)."""
    try:
        context = serving("127.0.0.2")
        running = await context.__aenter__()
    except OSError:
        pytest.skip("127.0.0.2 is not a local address here")
    try:
        yield running
    finally:
        await context.__aexit__(None, None, None)


# ---------------------------------------------------------------------------------------------------
# Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "BRIDGE_URL_FETCH_ALLOW_HTTP",
        "BRIDGE_URL_FETCH_TIMEOUT_SECONDS",
        "BRIDGE_URL_FETCH_ALLOW_NETWORKS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


@pytest.mark.usefixtures("clean_env")
def test_settings_default_to_https_only_60_seconds_and_no_exemption() -> None:
    settings = load_settings()
    assert settings.url_fetch_allow_http is False
    assert settings.url_fetch_timeout_seconds == 60
    assert settings.url_fetch_allow_networks == ()
    fetch_policy = FetchPolicy.from_settings(settings, max_bytes=1234)
    assert fetch_policy == FetchPolicy(
        allow_http=False, allowed_networks=(), timeout_seconds=60, max_bytes=1234, max_redirects=5
    )


@pytest.mark.usefixtures("clean_env")
def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_URL_FETCH_ALLOW_HTTP", "true")
    monkeypatch.setenv("BRIDGE_URL_FETCH_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("BRIDGE_URL_FETCH_ALLOW_NETWORKS", " 127.0.0.1/32, fd12:3456::/48,10.1.2.3 ,")
    fetch_policy = FetchPolicy.from_settings(load_settings(), max_bytes=10)
    assert fetch_policy.allow_http is True
    assert fetch_policy.timeout_seconds == 2.5
    assert fetch_policy.allowed_networks == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("fd12:3456::/48"),
        ipaddress.ip_network("10.1.2.3/32"),
    )


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "BRIDGE_URL_FETCH_ALLOW_NETWORKS",
            "10.0.0.0/33",
            "BRIDGE_URL_FETCH_ALLOW_NETWORKS: '10.0.0.0/33' is not",
        ),
        (
            "BRIDGE_URL_FETCH_ALLOW_NETWORKS",
            "127.0.0.1/32,localhost",
            "'localhost' is not an IP network in CIDR",
        ),
        (
            "BRIDGE_URL_FETCH_TIMEOUT_SECONDS",
            "0",
            "BRIDGE_URL_FETCH_TIMEOUT_SECONDS: must be a number of seconds",
        ),
        (
            "BRIDGE_URL_FETCH_TIMEOUT_SECONDS",
            "soon",
            "BRIDGE_URL_FETCH_TIMEOUT_SECONDS: must be a number of seconds",
        ),
        ("BRIDGE_URL_FETCH_TIMEOUT_SECONDS", "3601", "above 0 and at most 3600"),
        ("BRIDGE_URL_FETCH_TIMEOUT_SECONDS", "nan", "above 0 and at most 3600"),
        ("BRIDGE_URL_FETCH_ALLOW_HTTP", "sometimes", "BRIDGE_URL_FETCH_ALLOW_HTTP: must be true or false"),
    ],
)
def test_a_bad_setting_is_a_clear_one_line_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "bad",
    [{"timeout_seconds": 0}, {"max_bytes": 0}, {"max_redirects": -1}, {"timeout_seconds": float("nan")}],
)
def test_a_policy_with_impossible_bounds_is_refused(bad: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "allow_http": False,
        "allowed_networks": (),
        "timeout_seconds": 1,
        "max_bytes": 1,
    }
    with pytest.raises(ValueError, match="must be"):
        FetchPolicy(**(values | bad))


# ---------------------------------------------------------------------------------------------------
# Addresses, without the network

BLOCKED = [
    # IPv4
    ("127.0.0.1", "a loopback address"),
    ("127.255.255.254", "a loopback address"),
    ("10.0.0.5", "a private address"),
    ("172.16.0.1", "a private address"),
    ("172.31.255.255", "a private address"),
    ("192.168.1.1", "a private address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("169.254.1.1", "a link-local address"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("192.0.0.1", "an IETF protocol address"),
    ("192.0.0.171", "an IETF protocol address"),
    ("192.0.2.1", "a documentation address"),
    ("198.51.100.7", "a documentation address"),
    ("203.0.113.9", "a documentation address"),
    ("198.18.0.1", "a benchmarking address"),
    ("198.19.255.255", "a benchmarking address"),
    ("192.88.99.1", "a 6to4 relay address"),
    ("224.0.0.1", "a multicast address"),
    ("239.255.255.250", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "the broadcast address"),
    # IPv6
    ("::", "the unspecified address"),
    ("::1", "a loopback address"),
    ("fe80::1", "a link-local address"),
    ("fe80::1%eth0", "a link-local address"),
    ("fc00::1", "a unique local (private) address"),
    ("fd12:3456::1", "a unique local (private) address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("fec0::1", "a site-local address"),
    ("ff02::1", "a multicast address"),
    ("ff0e::1", "a multicast address"),
    ("2001:db8::1", "a documentation address"),
    ("100::1", "a discard-only address"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "a Teredo address"),  # server 65.54.227.120, client 8.8.8.8
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "embedding a documentation address"),  # client 192.0.2.45
    # IPv6 forms that carry an IPv4 address
    ("::ffff:127.0.0.1", "an IPv6 address embedding a loopback address"),
    ("::ffff:169.254.169.254", "an IPv6 address embedding a cloud metadata address"),
    ("::ffff:8.8.8.8", "an IPv4-mapped address"),
    ("::127.0.0.1", "an IPv6 address embedding a loopback address"),
    ("::8.8.8.8", "an IPv4-compatible address"),
    ("::ffff:0:127.0.0.1", "an IPv6 address embedding a loopback address"),
    ("::ffff:0:8.8.8.8", "an IPv4-translated address"),
    ("64:ff9b::7f00:1", "an IPv6 address embedding a loopback address"),
    ("64:ff9b::a00:5", "an IPv6 address embedding a private address"),
    ("64:ff9b::808:808", "a NAT64 address"),
    ("64:ff9b:1::a9fe:a9fe", "an IPv6 address embedding a cloud metadata address"),
    ("64:ff9b:1:a9fe:a9:fe00::", "an IPv6 address embedding a cloud metadata address"),  # RFC 6052 /48
    ("64:ff9b:1::808:808", "a NAT64 address"),
    ("2002:7f00:1::1", "an IPv6 address embedding a loopback address"),
    ("2002:a9fe:a9fe::1", "an IPv6 address embedding a cloud metadata address"),
    ("2002:a00:5::", "an IPv6 address embedding a private address"),
    ("2002:c0a8:101::1", "an IPv6 address embedding a private address"),
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_every_non_public_address_is_blocked_with_its_reason(address: str, reason: str) -> None:
    found = blocked_reason(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "allowed", "passes"),
    [
        ("127.0.0.1", "127.0.0.1/32", True),
        ("10.0.0.5", "10.0.0.0/8", True),
        ("127.0.0.2", "127.0.0.1/32", False),  # the exemption covers exactly its network
        ("::ffff:127.0.0.1", "127.0.0.1/32", False),  # another form of the address is not exempt
        ("::ffff:127.0.0.1", "::ffff:0:0/96", False),  # an exempt wrapper does not exempt what it holds
        ("64:ff9b::a00:5", "64:ff9b::/96", False),
        ("2002:7f00:1::1", "2002::/16", False),
        ("64:ff9b::808:808", "64:ff9b::/96", True),  # exempt NAT64 of a public address (DNS64 networks)
        ("64:ff9b:1::808:808", "64:ff9b:1::/48", True),  # the same in the local-use prefix (/96 layout)
        ("64:ff9b:1:808:8:800::", "64:ff9b:1::/48", True),  # ... and in its /48 layout
        ("64:ff9b:1::a9fe:a9fe", "64:ff9b:1::/48", False),
        ("64:ff9b:1:a9fe:a9:fe00::", "64:ff9b:1::/48", False),
        ("::ffff:127.0.0.1", "127.0.0.1/32,::ffff:0:0/96", True),
    ],
)
def test_the_exemption_covers_its_networks_but_never_what_an_address_embeds(
    address: str, allowed: str, passes: bool
) -> None:
    networks = [ipaddress.ip_network(n) for n in allowed.split(",")]
    assert (blocked_reason(ipaddress.ip_address(address), networks) is None) is passes


@pytest.mark.parametrize(
    ("host", "address", "standard"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("::1", "::1", True),
        ("2130706433", "127.0.0.1", False),
        ("0x7f.1", "127.0.0.1", False),
        ("0x7f000001", "127.0.0.1", False),
        ("0177.0.0.1", "127.0.0.1", False),
        ("017700000001", "127.0.0.1", False),
        ("127.1", "127.0.0.1", False),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254", False),
        ("0", "0.0.0.0", False),
    ],
)
def test_literal_hosts_are_read_as_getaddrinfo_would(host: str, address: str, standard: bool) -> None:
    assert literal_address(host) == (ipaddress.ip_address(address), standard)


@pytest.mark.parametrize("host", ["example.com", "face.bad", "1.2.3.4.5", "0x7g.1", "files.example.test"])
def test_names_are_not_literals(host: str) -> None:
    assert literal_address(host) is None


# ---------------------------------------------------------------------------------------------------
# URL shape


@pytest.mark.parametrize(
    ("url", "allow_http", "rule"),
    [
        ("ftp://example.com/file.pdf", True, "only https and http URLs may be fetched"),
        ("file:///etc/passwd", True, "only https and http URLs may be fetched"),
        ("http://example.com/file.pdf", False, "only https URLs may be fetched"),
        ("gopher://example.com:70/", False, "only https URLs may be fetched"),
        ("/relative/file.pdf", False, "only https URLs may be fetched"),
        ("https://user:" + SECRET + "@example.com/f.pdf", False, "user name or password"),
        ("https://" + SECRET + "@example.com/f.pdf", False, "user name or password"),
        ("https://:" + SECRET + "@example.com/f.pdf", False, "user name or password"),
        ("https://example.com:0/f.pdf", False, "its port is not valid"),
        ("https:///f.pdf", False, "it has no host"),
        ("https://example.com:99999/f.pdf", False, "not a valid URL"),
        ("https://[::1/f.pdf", False, "not a valid URL"),
        ("https://evil.example\\@files.example.com/f.pdf", False, "not a valid URL"),
        ("https://evil.example%2F@files.example.com/f.pdf", False, "user name or password"),
    ],
)
async def test_urls_of_the_wrong_shape_are_refused_before_any_lookup(
    dns: FakeDns, caplog: pytest.LogCaptureFixture, url: str, allow_http: bool, rule: str
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UrlNotAllowed) as caught:
        await fetch_all(url, policy(allow_http=allow_http))
    assert caught.value.code == "url_not_allowed"
    assert isinstance(caught.value, InvalidInput)
    assert rule in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in caplog.text
    assert dns.calls == []


LITERAL_HOSTS = [
    ("http://127.0.0.1/", "a loopback address"),
    ("http://2130706433/", "a loopback address"),
    ("http://0x7f.1/", "a loopback address"),
    ("http://0x7f000001/", "a loopback address"),
    ("http://0177.0.0.1/", "a loopback address"),
    ("http://017700000001/", "a loopback address"),
    ("http://127.1/", "a loopback address"),
    ("http://0/", "unspecified"),
    ("http://[::1]/", "a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "embedding a loopback address"),
    ("http://[::ffff:7f00:1]/", "embedding a loopback address"),
    ("http://[::127.0.0.1]/", "embedding a loopback address"),
    ("http://[64:ff9b::7f00:1]/", "embedding a loopback address"),
    ("http://[2002:7f00:1::]/", "embedding a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
    ("http://0xa9fea9fe/latest/meta-data/", "a cloud metadata address"),
    ("http://[::ffff:169.254.169.254]/", "embedding a cloud metadata address"),
    ("http://[fd00:ec2::254]/", "a cloud metadata address"),
    ("http://100.100.100.200/", "a cloud metadata address"),
    ("http://10.0.0.5:8080/", "a private address"),
    ("http://192.168.0.1/", "a private address"),
    ("http://[fc00::1]/", "a unique local (private) address"),
    ("http://[fe80::1%25eth0]/", "a link-local address"),
    ("http://224.0.0.1/", "a multicast address"),
    ("http://[ff02::1]/", "a multicast address"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://198.18.0.1/", "a benchmarking address"),
    ("http://255.255.255.255/", "the broadcast address"),
]


@pytest.mark.parametrize(("url", "reason"), LITERAL_HOSTS)
async def test_literal_ip_hosts_in_every_form_are_checked_like_resolved_ones(
    dns: FakeDns, url: str, reason: str
) -> None:
    with pytest.raises(UrlNotAllowed) as caught:
        await fetch_all(url, policy())
    assert f"the URL is not allowed: its host is {reason}" in str(caught.value) or reason in str(caught.value)
    assert "only public addresses may be fetched" in str(caught.value)
    assert dns.calls == []  # a literal is never looked up


async def test_a_public_address_in_a_non_standard_form_is_refused_too(dns: FakeDns) -> None:
    with pytest.raises(UrlNotAllowed, match="non-standard form"):
        await fetch_all("http://134744072/", policy())  # 8.8.8.8
    assert dns.calls == []


# ---------------------------------------------------------------------------------------------------
# Names


async def test_a_public_looking_name_resolving_to_a_private_address_is_refused(dns: FakeDns) -> None:
    dns.set("files.example.com", ["10.0.0.5"])
    with pytest.raises(UrlNotAllowed) as caught:
        await fetch_all("https://files.example.com/report.pdf", policy())
    assert str(caught.value) == (
        "the URL is not allowed: its host name resolves to a private address;"
        " only public addresses may be fetched"
    )
    assert "10.0.0.5" not in str(caught.value)  # what an internal name resolves to is not told
    assert dns.calls == [("files.example.com", 443)]


@pytest.mark.parametrize(
    "answer",
    [
        ["93.184.216.34", "10.0.0.5"],
        ["10.0.0.5", "93.184.216.34"],
        ["2606:4700:4700::1111", "::1"],
        ["127.0.0.1", "169.254.169.254"],  # the first is exempt below, the second is not
        ["127.0.0.1", "::ffff:127.0.0.1"],  # nor another form of the exempt one
    ],
)
async def test_one_blocked_address_among_several_refuses_the_name(
    dns: FakeDns, server: Server, answer: list[str]
) -> None:
    dns.set("mixed.example.test", answer)
    with pytest.raises(UrlNotAllowed, match="its host name resolves to"):
        await fetch_all(server.url("/files/report.pdf", "mixed.example.test"), policy(LOCAL))
    assert server.seen == []


async def test_a_name_that_does_not_resolve_is_unreachable(dns: FakeDns) -> None:
    with pytest.raises(UrlUnreachable) as caught:
        await fetch_all("https://nowhere.example.test/f.pdf", policy())
    assert caught.value.code == "url_unreachable" and isinstance(caught.value, Unavailable)
    assert "host name does not resolve" in str(caught.value)
    dns.set("empty.example.test", [])
    with pytest.raises(UrlUnreachable, match=r"does not resolve|has no address"):
        await fetch_all("https://empty.example.test/f.pdf", policy())


async def test_resolve_host_asks_the_loops_getaddrinfo_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    asked: list[tuple[str, int]] = []

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        asked.append((host, port))
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800:220:1::", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    assert await REAL_RESOLVE_HOST("example.com", 443) == [
        ipaddress.ip_address("93.184.216.34"),
        ipaddress.ip_address("2606:2800:220:1::"),
    ]
    assert asked == [("example.com", 443)]


# ---------------------------------------------------------------------------------------------------
# Fetching from the local server


async def test_a_file_is_fetched_with_its_name_type_and_size(dns: FakeDns, server: Server) -> None:
    dns.set("files.example.test", ["127.0.0.1"])
    url = server.url("/files/report.pdf", "files.example.test")
    fetched, body = await fetch_all(url, policy(LOCAL))
    assert body == PDF
    assert fetched == FetchedFile(
        url=url, filename="résumé final.pdf", content_type="application/pdf", size_hint=len(PDF)
    )
    # The request went to the vetted address with the URL's own host name in it.
    assert server.seen == [("/files/report.pdf", f"files.example.test:{server.port}")]


async def test_without_content_disposition_the_name_is_the_last_path_segment(server: Server) -> None:
    fetched, body = await fetch_all(server.url("/files/notes.txt"), policy(LOCAL))
    assert (fetched.filename, fetched.content_type, body) == ("notes.txt", "text/plain", NOTES)


async def test_without_any_name_the_file_is_called_download(server: Server) -> None:
    fetched, _ = await fetch_all(server.url("/files/"), policy(LOCAL))
    assert fetched.filename == "download"
    assert fetched.content_type == "application/octet-stream"  # what aiohttp's server sends by default


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("..%2F..%2Fetc%2Fpass%07wd", "passwd"),  # no path, no control character
        ("a%5Cb%5Cc.pdf", "c.pdf"),  # nor a Windows one
        ("%E2%80%AEfdp.exe", "fdp.exe"),  # no right-to-left override
        ("%2F%2F%2F", "evil"),  # nothing left: the path's name
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),  # at most 255 characters (200: the upload names' cap)
    ],
)
async def test_the_file_name_is_sanitised(server: Server, name: str, expected: str) -> None:
    fetched, _ = await fetch_all(server.url("/files/evil?" + _query(name=name)), policy(LOCAL))
    assert fetched.filename == expected
    assert len(fetched.filename) <= 255 and "/" not in fetched.filename and "\\" not in fetched.filename


async def test_a_redirect_chain_is_followed_hop_by_hop(dns: FakeDns, server: Server) -> None:
    dns.set("files.example.test", ["127.0.0.1"])
    fetched, body = await fetch_all(server.url("/redirect/5", "files.example.test"), policy(LOCAL))
    assert body == PDF
    assert fetched.url == server.url("/files/report.pdf", "files.example.test")
    assert [path for path, _ in server.seen] == [f"/redirect/{n}" for n in range(5, 0, -1)] + [
        "/files/report.pdf"
    ]
    assert len(dns.calls) == 6  # every hop resolved (and vetted) from scratch


async def test_more_redirects_than_allowed_are_refused(server: Server) -> None:
    with pytest.raises(UrlNotAllowed, match="redirects more than 5 times"):
        await fetch_all(server.url("/redirect/6"), policy(LOCAL))
    assert len(server.seen) == 6  # the sixth redirect is not followed
    with pytest.raises(UrlNotAllowed, match="redirects more than 0 times"):
        await fetch_all(server.url("/redirect/1"), policy(LOCAL, max_redirects=0))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_every_redirect_status_is_followed(server: Server, status: int) -> None:
    target = server.url("/files/notes.txt")
    fetched, _ = await fetch_all(server.url(f"/to?status={status}&location={target}"), policy(LOCAL))
    assert fetched.url == target


async def test_a_relative_location_is_resolved_against_the_current_url(server: Server) -> None:
    fetched, body = await fetch_all(server.url("/relative/a/b"), policy(LOCAL))
    assert (fetched.url, body) == (server.url("/files/notes.txt"), NOTES)


async def test_a_redirect_without_location_is_an_http_error(server: Server) -> None:
    with pytest.raises(UrlHttpError, match="HTTP 302 \\(Found\\) without a Location"):
        await fetch_all(server.url("/no-location"), policy(LOCAL))


async def test_a_redirect_to_127_0_0_1_is_refused(server2: Server) -> None:
    # The first hop is 127.0.0.2 (exempt); its redirect to 127.0.0.1 is not covered by the exemption.
    target = f"http://127.0.0.1:{server2.port}/files/notes.txt"
    with pytest.raises(UrlNotAllowed) as caught:
        await fetch_all(server2.url(f"/to?location={target}"), policy("127.0.0.2/32"))
    assert str(caught.value) == (
        "redirect 1 is not allowed: its host is a loopback address; only public addresses may be fetched"
    )
    assert len(server2.seen) == 1


@pytest.mark.parametrize(
    ("location", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "a cloud metadata address"),
        ("http://[::1]:{port}/files/notes.txt", "a loopback address"),
        # 127.0.0.1 is exempt here, but not the IPv4-mapped form of it
        ("http://[::ffff:127.0.0.1]:{port}/files/notes.txt", "its host is an IPv4-mapped address"),
        (
            "http://0x7f.1:{port}/files/notes.txt",
            "non-standard form",
        ),  # 127.0.0.1, exempt, but not so written
        ("http://2130706433:{port}/files/notes.txt", "non-standard form"),
        ("http://internal.example.test:{port}/admin", "its host name resolves to a private address"),
        ("http://rebound.example.test:{port}/admin", "its host name resolves to a loopback address"),
        ("https://user:" + SECRET + "@files.example.test/f.pdf", "user name or password"),
        ("ftp://files.example.test/f.pdf", "only https and http URLs"),
        ("file:///etc/passwd", "only https and http URLs"),
    ],
)
async def test_a_redirect_to_a_forbidden_target_is_refused(
    dns: FakeDns, server: Server, caplog: pytest.LogCaptureFixture, location: str, rule: str
) -> None:
    caplog.set_level(logging.DEBUG)
    dns.set("internal.example.test", ["10.0.0.5"])
    dns.set("rebound.example.test", ["127.0.0.2"])
    target = location.format(port=server.port)
    with pytest.raises(UrlNotAllowed) as caught:
        await fetch_all(server.url("/to", None) + "?" + _query(location=target), policy(LOCAL))
    assert str(caught.value).startswith("redirect 1 is not allowed: ")
    assert rule in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in caplog.text
    assert len(server.seen) == 1  # nothing reached the forbidden target (nor the server again)


def _query(**values: str) -> str:
    from urllib.parse import urlencode

    return urlencode(values)


async def test_a_non_2xx_answer_is_an_http_error_naming_the_status(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UrlHttpError) as caught:
        await fetch_all(server.url(f"/missing?token={SECRET}"), policy(LOCAL))
    assert caught.value.code == "url_http_error" and caught.value.status == 404
    assert isinstance(caught.value, UpstreamFailure)
    assert str(caught.value) == "the URL answered HTTP 404 (Not Found), not a file"
    assert SECRET not in str(caught.value) and SECRET not in caplog.text


async def test_a_declared_size_above_the_cap_is_refused_before_reading(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(UrlTooLarge) as caught:
        async with fetch_url(server.url("/big-declared"), policy(LOCAL, max_bytes=10_000)):
            raise AssertionError("not opened")
    assert caught.value.code == "url_too_large" and isinstance(caught.value, InvalidInput)
    assert "larger than the upload limit (10000 bytes)" in str(caught.value)
    assert time.monotonic() - started < 5  # the body that never ends was not waited for
    await server.wait_no_connections()


async def test_a_body_above_the_cap_without_content_length_is_cut_off(server: Server) -> None:
    received = 0
    with pytest.raises(UrlTooLarge):
        async with fetch_url(server.url("/big-chunked"), policy(LOCAL, max_bytes=5000)) as (fetched, chunks):
            assert fetched.size_hint is None
            async for chunk in chunks:
                received += len(chunk)
    assert received <= 5000
    await server.wait_no_connections()


async def test_a_body_of_exactly_the_cap_passes(server: Server) -> None:
    fetched, body = await fetch_all(server.url("/sized/5000"), policy(LOCAL, max_bytes=5000))
    assert (fetched.size_hint, len(body)) == (5000, 5000)
    with pytest.raises(UrlTooLarge):
        await fetch_all(server.url("/sized/5001"), policy(LOCAL, max_bytes=5000))


async def test_a_slow_drip_endless_body_ends_at_the_deadline(server: Server) -> None:
    started = time.monotonic()
    received = 0
    with pytest.raises(UrlTimeout) as caught:
        async with fetch_url(server.url("/drip"), policy(LOCAL, timeout=0.5)) as (_, chunks):
            async for chunk in chunks:
                received += len(chunk)
    elapsed = time.monotonic() - started
    assert received > 0  # it was flowing, slowly
    assert 0.5 <= elapsed < 3
    assert caught.value.code == "url_timeout" and isinstance(caught.value, Unavailable)
    assert str(caught.value) == "fetching the URL took longer than the 0.5 s allowed for the whole download"
    await server.wait_no_connections()


async def test_an_answer_that_never_comes_ends_at_the_deadline(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(UrlTimeout):
        await fetch_all(server.url("/hang"), policy(LOCAL, timeout=0.3))
    assert time.monotonic() - started < 3
    await server.wait_no_connections()


async def test_the_deadline_covers_every_hop(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each hop is quick, but the lookups of the chain add up past the deadline.
    original = url_fetch._vet

    async def slow_vet(*args: Any) -> Any:
        await asyncio.sleep(0.15)
        return await original(*args)

    monkeypatch.setattr(url_fetch, "_vet", slow_vet)
    with pytest.raises(UrlTimeout):
        await fetch_all(server.url("/redirect/5"), policy(LOCAL, timeout=0.5))
    assert len(server.seen) < 6


async def test_a_server_that_accepts_no_connection_is_a_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(url_fetch, "CONNECT_TIMEOUT_SECONDS", 0.3)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]  # fill the accept queue: further SYNs are dropped
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            with pytest.raises(UrlTimeout, match=r"did not accept a connection within 0\.3 s"):
                await fetch_all(f"http://127.0.0.1:{port}/f.pdf", policy(LOCAL))
        finally:
            for filler in fillers:
                filler.close()


async def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(UrlUnreachable, match="could not get an answer from the URL's server"):
            await fetch_all(f"http://127.0.0.1:{port}/f.pdf", policy(LOCAL))


async def test_a_body_cut_short_is_unreachable() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    raw = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UrlUnreachable, match="broke off before the end"):
            await fetch_all(f"http://127.0.0.1:{port}/f.pdf", policy(LOCAL))
    finally:
        raw.close()
        await raw.wait_closed()


# ---------------------------------------------------------------------------------------------------
# Pinning: the connection goes to the address that was checked


async def test_dns_rebinding_cannot_move_the_connection(
    dns: FakeDns, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # First answer: the (exempt) test server; every later one: the metadata service.
    dns.set("rebind.example.test", ["127.0.0.1"], ["169.254.169.254"])

    def no_other_lookup(*_: Any, **__: Any) -> Any:
        raise AssertionError("a second, unpinned lookup was made")

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", no_other_lookup)
    monkeypatch.setattr(socket, "getaddrinfo", no_other_lookup)
    fetched, body = await fetch_all(server.url("/files/report.pdf", "rebind.example.test"), policy(LOCAL))
    assert body == PDF and fetched.filename == "résumé final.pdf"
    assert dns.calls == [("rebind.example.test", server.port)]  # resolved exactly once
    assert server.seen == [("/files/report.pdf", f"rebind.example.test:{server.port}")]


async def test_a_rebound_name_is_refused_on_the_next_hop(dns: FakeDns, server: Server) -> None:
    dns.set("rebind.example.test", ["127.0.0.1"], ["169.254.169.254"])
    with pytest.raises(UrlNotAllowed, match=r"redirect 1 is not allowed: .* a cloud metadata address"):
        await fetch_all(server.url("/redirect/1", "rebind.example.test"), policy(LOCAL))
    assert len(dns.calls) == 2 and len(server.seen) == 1


async def test_the_pinned_resolver_answers_only_for_what_was_vetted() -> None:
    resolver = url_fetch._PinnedResolver()
    resolver.pin(
        "Files.Example.Test", 443, (ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("2606::1"))
    )
    both = await resolver.resolve("files.example.test", 443, socket.AF_UNSPEC)
    assert [(r["hostname"], r["host"], r["port"]) for r in both] == [
        ("files.example.test", "93.184.216.34", 443),
        ("files.example.test", "2606::1", 443),
    ]
    assert [r["host"] for r in await resolver.resolve("files.example.test", 443, socket.AF_INET6)] == [
        "2606::1"
    ]
    for host, port in (("other.example.test", 443), ("files.example.test", 8443)):
        with pytest.raises(OSError, match="no vetted address"):
            await resolver.resolve(host, port, socket.AF_UNSPEC)
    await resolver.close()
    with pytest.raises(OSError):
        await resolver.resolve("files.example.test", 443, socket.AF_UNSPEC)


# ---------------------------------------------------------------------------------------------------
# TLS: the socket goes to the pinned address, the certificate is checked against the URL's host


@dataclass
class Pki:
    ca_pem: bytes
    directory: Path

    def server_context(self, name: str, sni: list[str | None]) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        ca_key = serialization.load_pem_private_key((self.directory / "ca.key").read_bytes(), None)
        ca = x509.load_pem_x509_certificate(self.ca_pem)
        cert = (
            _builder(name, ca.subject)
            .public_key(key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        (self.directory / f"{name}.pem").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.directory / f"{name}.pem")
        context.sni_callback = lambda _sock, server_name, _ctx: sni.append(server_name)
        return context


def _builder(name: str, issuer: x509.Name | None = None) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        _builder("url-fetch test CA")
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Pki(ca.public_bytes(serialization.Encoding.PEM), directory)


@pytest.fixture
async def tls_server(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    sni: list[str | None] = []
    async with serving(ssl_context=pki.server_context("files.example.test", sni)) as running:
        running.sni = sni
        client = ssl.create_default_context(cadata=pki.ca_pem.decode())
        monkeypatch.setattr(url_fetch, "_tls", lambda: client)
        yield running


async def test_tls_checks_the_urls_host_name_while_connecting_to_the_pinned_address(
    dns: FakeDns, tls_server: Server
) -> None:
    dns.set("files.example.test", ["127.0.0.1"], ["169.254.169.254"])
    url = tls_server.url("/files/report.pdf", "files.example.test")
    fetched, body = await fetch_all(url, policy(LOCAL, allow_http=False))
    assert body == PDF and fetched.url == url
    assert tls_server.sni == ["files.example.test"]  # SNI: the URL's name, not the address
    assert len(dns.calls) == 1


async def test_a_certificate_for_another_name_is_refused(dns: FakeDns, tls_server: Server) -> None:
    dns.set("other.example.test", ["127.0.0.1"])
    with pytest.raises(UrlUnreachable, match="failed TLS verification"):
        await fetch_all(
            tls_server.url("/files/report.pdf", "other.example.test"), policy(LOCAL, allow_http=False)
        )
    assert tls_server.seen == []


async def test_an_untrusted_certificate_is_refused(
    dns: FakeDns, tls_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(url_fetch, "_tls", lambda: True)  # the system's CAs only
    dns.set("files.example.test", ["127.0.0.1"])
    with pytest.raises(UrlUnreachable, match="failed TLS verification"):
        await fetch_all(
            tls_server.url("/files/report.pdf", "files.example.test"), policy(LOCAL, allow_http=False)
        )


async def test_a_redirect_from_https_down_to_http_is_refused(dns: FakeDns, tls_server: Server) -> None:
    dns.set("files.example.test", ["127.0.0.1"])
    down = f"http://files.example.test:{tls_server.port}/files/notes.txt"
    with pytest.raises(UrlNotAllowed, match="redirect 1 is not allowed: only https URLs may be fetched"):
        await fetch_all(
            tls_server.url("/to?" + _query(location=down), "files.example.test"),
            policy(LOCAL, allow_http=False),
        )


# ---------------------------------------------------------------------------------------------------
# Nothing left behind


async def test_nothing_is_left_open_or_on_disk_however_the_fetch_ends(
    server: Server, sessions: list[aiohttp.ClientSession], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # read to the end
    await fetch_all(server.url("/files/report.pdf"), policy(LOCAL))
    await server.wait_no_connections()
    # the caller stops after one chunk
    async with fetch_url(server.url("/big-chunked"), policy(LOCAL)) as (_, chunks):
        async for _chunk in chunks:
            break
    await server.wait_no_connections()
    # the caller fails inside the block
    with pytest.raises(RuntimeError):
        async with fetch_url(server.url("/drip"), policy(LOCAL)) as (_, chunks):
            await anext(chunks)
            raise RuntimeError("caller failure")
    await server.wait_no_connections()
    # refused at the answer, and after a redirect
    with pytest.raises(UrlHttpError):
        await fetch_all(server.url("/missing"), policy(LOCAL))
    with pytest.raises(UrlNotAllowed):
        await fetch_all(server.url("/to?location=http://[::1]/"), policy(LOCAL))
    await server.wait_no_connections()
    assert len(sessions) == 5 and all(session.closed for session in sessions)
    assert list(tmp_path.iterdir()) == []
