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

What this does not stop: a DNS answer that changes between our check and aiohttp's own lookup
(rebinding). The window is milliseconds and the host lists keep attachment fetches on
Discord's CDN; pinning the resolved address would need a custom connector per fetch.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp

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


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    content_type: str
    url: str


def _address_refusal(address: str, *, allow_local: bool) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.is_loopback:
        return None if allow_local else "a loopback address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _address_refusal(str(ip.ipv4_mapped), allow_local=allow_local)
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_unspecified:
        return "a private address"
    if not ip.is_global:
        return "a non-public address"
    return None


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
) -> Fetched:
    """GET `url` into memory: at most `limit` bytes within `timeout` seconds, every hop checked.

    `what` names the thing for the messages ("the attachment", "the video").
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
                    async for chunk in response.content.iter_chunked(CHUNK):
                        buffer += chunk
                        if len(buffer) > limit:
                            raise FetchTooLarge(_too_large(what, limit))
                    return Fetched(bytes(buffer), response.content_type, url)
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
