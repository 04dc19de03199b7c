"""Reading bytes from someone else's URL: bounded in size and time, confined in where it goes.

The bot fetches two kinds of URLs on its own server: Discord attachments (reference images)
and finished videos (to attach them to the result message). Both URLs come from outside, and
a careless GET is a way in: a hanging CDN holds a job for minutes, a 1.5 GB answer fills the
memory, and a redirect to `http://169.254.169.254/…` makes the bot read a cloud metadata
service and post it as a "video". So every fetch here:

* has a size cap, checked against the declared `Content-Length` first and while streaming;
* has a connect timeout and a total deadline;
* follows redirects itself, and checks every hop: https only, an allowed host when the caller
  names hosts, and never a loopback, private, link-local or otherwise non-public address
  (resolved here, for every hop);
* raises one of a few errors whose text says what happened ("timed out", "too large"), so the
  member is not told that Discord or APIMart failed when it was the file.

`FetchPolicy.allow_local` (the `ALLOW_LOCAL_FETCH` setting) also admits http:// and loopback
addresses, for the tests and the offline demo, whose stand-ins listen on 127.0.0.1. Private
and link-local addresses stay refused even then.

A DNS answer that changes between our check and aiohttp's own lookup (rebinding: public on
the first question, 169.254.169.254 on the second) is stopped by `ConfinedResolver`: the
session that fetches (`fetch_session`) resolves through it, so the address aiohttp connects to
is itself checked, not only the one `check_url` saw. `check_url` stays, for the sentence it
gives the member; the resolver is the lock.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

#: How long a connection to the other side may take to open (seconds).
CONNECT_TIMEOUT = 10.0
#: The whole read of a reference image from Discord's CDN (seconds).
ATTACHMENT_TIMEOUT = 30.0
#: The whole download of a finished video before it is posted as a link instead (seconds).
RESULT_DOWNLOAD_TIMEOUT = 120.0
#: Redirects followed before giving up (each hop is checked).
MAX_REDIRECTS = 5
#: The hosts Discord serves attachments from.
DISCORD_CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
#: HTTP statuses that send the client elsewhere (each target is checked before it is fetched).
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Read in pieces of this size, so the cap is checked as the bytes arrive.
CHUNK = 1 << 16

#: errno values that mean this process (or machine) ran out of a resource: our fault, not theirs.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class FetchError(Exception):
    """A fetch that did not produce the bytes; `str()` is a sentence for a person."""


class FetchTimedOut(FetchError):
    pass


class FetchTooLarge(FetchError):
    pass


class FetchRefused(FetchError):
    """The URL (or a redirect) points somewhere the bot must not go."""


class FetchFailed(FetchError):
    """The other side answered with an error, or the connection failed."""


class OutOfResources(FetchError):
    """The bot itself ran out of file descriptors or memory: not the remote side's fault."""


def resource_error(exc: BaseException) -> OSError | None:
    """The OSError inside `exc` (or its causes) that says this process ran out of resources."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in RESOURCE_ERRNOS:
            return current
        os_error = getattr(current, "os_error", None)  # aiohttp's ClientConnectorError
        if isinstance(os_error, OSError) and os_error.errno in RESOURCE_ERRNOS:
            return os_error
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Where a fetch may go. `hosts`: allowed `host` or `host:port` names (None: any public)."""

    hosts: frozenset[str] | None = None
    allow_local: bool = False
    extra_hosts: frozenset[str] = field(default_factory=frozenset)

    def host_allowed(self, host: str, port: int | None) -> bool:
        if self.hosts is None:
            return True
        names = self.hosts | self.extra_hosts
        return host in names or (port is not None and f"{host}:{port}" in names)


def discord_cdn_policy(
    *, allow_local: bool, extra_hosts: frozenset[str] = frozenset()
) -> FetchPolicy:
    """Attachments: Discord's CDN hosts, plus a stand-in's `host:port` in tests."""
    return FetchPolicy(hosts=DISCORD_CDN_HOSTS, allow_local=allow_local, extra_hosts=extra_hosts)


#: Bytes kept from the start of a streamed body, for sniffing its type.
HEAD_BYTES = 64


@dataclass(frozen=True, slots=True)
class Fetched:
    #: The body (empty when it was streamed `into` a sink instead).
    data: bytes
    content_type: str
    url: str
    #: The body's first `HEAD_BYTES` (also when streamed), and its size.
    head: bytes = b""
    size: int = 0


def _address_refusal(address: str, *, allow_local: bool) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.is_loopback:
        return None if allow_local else "a loopback address"
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo's server and client)
        # are judged by what they carry: 2002:a9fe:a9fe::1 is 169.254.169.254 in disguise.
        if ip.ipv4_mapped is not None:
            return _address_refusal(str(ip.ipv4_mapped), allow_local=allow_local)
        carried = [ip.sixtofour] if ip.sixtofour is not None else list(ip.teredo or ())
        for inner in carried:
            if (why := _address_refusal(str(inner), allow_local=False)) is not None:
                return why
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_unspecified:
        return "a private address"
    if not ip.is_global:
        return "a non-public address"
    return None


class ConfinedResolver(AbstractResolver):
    """aiohttp's own resolver, minus every address `check_url` would refuse.

    Installed on the fetching session's connector, so the answer that is checked is the
    answer that is connected to: a second DNS answer cannot send the request elsewhere.
    """

    def __init__(self, *, allow_local: bool) -> None:
        self.allow_local = allow_local
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        kept = [
            a for a in answers if _address_refusal(a["host"], allow_local=self.allow_local) is None
        ]
        if not kept:
            # An OSError is what aiohttp expects from a resolver: it becomes a connection error.
            raise OSError(f"{host} resolves only to addresses reelbot does not fetch from")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def fetch_session(*, allow_local: bool) -> aiohttp.ClientSession:
    """The session every `fetch` goes through: its own connector, resolving via the confinement.

    Separate from the APIMart session on purpose: an operator may point APIMART_BASE_URL at a
    proxy on a private address, which fetches of other people's URLs must never reach.
    """
    connector = aiohttp.TCPConnector(resolver=ConfinedResolver(allow_local=allow_local))
    return aiohttp.ClientSession(connector=connector)


async def check_url(url: str, policy: FetchPolicy, *, what: str) -> None:
    """Refuse `url` unless the policy allows its scheme, host and every address it resolves to."""
    parts = urlsplit(url)
    schemes = ("https", "http") if policy.allow_local else ("https",)
    if parts.scheme not in schemes:
        raise FetchRefused(f"{what}: only https links are fetched, not {parts.scheme or 'this'}")
    host = (parts.hostname or "").lower()
    if not host:
        raise FetchRefused(f"{what}: the link has no host")
    try:
        port = parts.port
    except ValueError:
        raise FetchRefused(f"{what}: the link's port is not valid") from None
    if not policy.host_allowed(host, port):
        raise FetchRefused(f"{what}: {host} is not a host reelbot fetches from")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise FetchFailed(f"{what}: {host} could not be resolved") from exc
        addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        why = _address_refusal(address, allow_local=policy.allow_local)
        if why is not None:
            raise FetchRefused(f"{what}: {host} points to {why}; not fetched")


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    *,
    limit: int,
    timeout: float,
    policy: FetchPolicy,
    what: str,
    into: Callable[[bytes], Awaitable[None]] | None = None,
) -> Fetched:
    """GET `url` into memory: at most `limit` bytes within `timeout` seconds, every hop checked.

    `what` names the thing for the messages ("the attachment", "the video"). With `into`,
    the body is handed over chunk by chunk instead (a video to a file: memory does not grow
    with its size) and `Fetched.data` stays empty.
    """
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
    try:
        async with asyncio.timeout(timeout):
            for _hop in range(MAX_REDIRECTS + 1):
                await check_url(url, policy, what=what)
                async with session.get(
                    url, allow_redirects=False, timeout=client_timeout
                ) as response:
                    if response.status in REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise FetchFailed(f"{what}: a redirect without a target")
                        url = urljoin(url, location)
                        continue
                    if response.status != 200:
                        raise FetchFailed(f"{what}: the server answered {response.status}")
                    declared = response.content_length
                    if declared is not None and declared > limit:
                        raise FetchTooLarge(_too_large(what, limit))
                    buffer = bytearray()
                    head = b""
                    size = 0
                    async for chunk in response.content.iter_chunked(CHUNK):
                        size += len(chunk)
                        if size > limit:
                            raise FetchTooLarge(_too_large(what, limit))
                        if len(head) < HEAD_BYTES:
                            head += chunk[: HEAD_BYTES - len(head)]
                        if into is None:
                            buffer += chunk
                        else:
                            await into(chunk)
                    return Fetched(bytes(buffer), response.content_type, url, head, size)
            raise FetchRefused(f"{what}: more than {MAX_REDIRECTS} redirects")
    except TimeoutError:
        raise FetchTimedOut(f"timed out reading {what} (after {timeout:g} s)") from None
    except FetchError:
        raise
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        if resource_error(exc) is not None:
            raise OutOfResources(
                f"reelbot ran out of open files or memory while reading {what}"
            ) from exc
        raise FetchFailed(f"{what}: the connection failed ({type(exc).__name__})") from exc


def _too_large(what: str, limit: int) -> str:
    return f"{what} is too large (over {limit / 1024 / 1024:.1f} MB)"
