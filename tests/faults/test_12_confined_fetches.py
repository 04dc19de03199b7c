"""Item 12: the bot fetches only https URLs on hosts that may serve them, never private,
loopback or link-local addresses (checked on every redirect), and takes attachments only
from Discord's CDN."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.core.fetch import (
    FetchFailed,
    FetchPolicy,
    FetchRefused,
    _address_refusal,
    fetch,
    fetch_session,
)
from tests.discordfix import (  # noqa: F401 - fixtures
    Reel,
    bot_fixture,
    env_fixture,
    notifier_options_fixture,
    reel_fixture,
    runtime_fixture,
    simcord_bot_fixture,
)
from tests.test_discord_notifier import VIDEO, finished_job
from tests.test_e2e import PNG, World, running_bot

LOCAL = FetchPolicy(allow_local=True)  # the tests' stand-ins listen on 127.0.0.1


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def redirect_server(aiohttp_server: Any, target: str) -> str:
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(target)

    app = web.Application()
    app.router.add_get("/v.mp4", moved)
    server = await aiohttp_server(app)
    return str(server.make_url("/v.mp4"))


async def test_a_redirect_to_a_metadata_address_is_not_followed(
    session: aiohttp.ClientSession, aiohttp_server: Any
) -> None:
    url = await redirect_server(aiohttp_server, "http://169.254.169.254/latest/meta-data/")
    with pytest.raises(FetchRefused, match="link-local"):
        await fetch(session, url, limit=1 << 20, timeout=5, policy=LOCAL, what="the video")


async def test_only_https_and_public_addresses_outside_tests(
    session: aiohttp.ClientSession,
) -> None:
    strict = FetchPolicy()
    with pytest.raises(FetchRefused, match="only https"):
        await fetch(
            session, "http://example.com/v.mp4", limit=1, timeout=5, policy=strict, what="v"
        )
    for url in ("https://127.0.0.1/v.mp4", "https://localhost/v.mp4", "https://[::1]/v.mp4"):
        with pytest.raises(FetchRefused, match="loopback"):
            await fetch(session, url, limit=1, timeout=5, policy=strict, what="v")
    for url in ("https://10.1.2.3/v.mp4", "https://192.168.0.1/v.mp4", "https://[fd00::1]/v"):
        with pytest.raises(FetchRefused, match="private"):
            await fetch(session, url, limit=1, timeout=5, policy=strict, what="v")
    hosts = FetchPolicy(hosts=frozenset({"cdn.discordapp.com"}))
    with pytest.raises(FetchRefused, match="not a host"):
        await fetch(
            session, "https://evil.example/a.png", limit=1, timeout=5, policy=hosts, what="a"
        )


def private_address() -> str | None:
    """A non-loopback address of this machine that a test server can listen on.

    A UDP `connect` only picks the outgoing interface (no packet is sent).
    """
    candidates: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        candidates.append(probe.getsockname()[0])
    with contextlib.suppress(OSError):
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        candidates += [str(info[4][0]) for info in infos]
    return next((a for a in candidates if not a.startswith(("127.", "0."))), None)


async def test_a_result_redirected_to_a_private_address_is_not_attached(
    reel: Reel, aiohttp_server: Any
) -> None:
    """A 302 to a server on this machine's private address, which serves a "video": the old
    download followed it and attached what it found."""
    address = private_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to listen on")

    async def secret(_request: web.Request) -> web.Response:
        return web.Response(body=VIDEO, content_type="video/mp4")

    app = web.Application()
    app.router.add_get("/secret.mp4", secret)
    inside = await aiohttp_server(app, host=address)
    url = await redirect_server(aiohttp_server, f"http://{address}:{inside.port}/secret.mp4")
    job = await finished_job(reel, url)
    assert reel.bot.notifier is not None
    await reel.bot.notifier.job_finished(job)
    await reel.env.settle()
    (message,) = reel.results()
    assert message.attachments == []  # posted as a link, nothing fetched from inside
    assert url in message.embeds[0].description


async def test_a_result_url_that_serves_a_web_page_is_not_attached(
    reel: Reel, aiohttp_server: Any
) -> None:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text="<html>instance metadata</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/v.mp4", page)
    server = await aiohttp_server(app)
    url = str(server.make_url("/v.mp4"))
    job = await finished_job(reel, url)
    assert reel.bot.notifier is not None
    await reel.bot.notifier.job_finished(job)
    await reel.env.settle()
    (message,) = reel.results()
    assert message.attachments == []


@pytest.mark.e2e
async def test_attachments_from_other_hosts_are_refused_before_anything_is_made(
    world: World,
) -> None:
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()
    elsewhere = f"http://localhost:{world.discord.port}"  # not the CDN's host:port
    image = world.discord.add_attachment("fox.png", PNG, "image/png", channel_id=world.channel_id)
    image["url"] = image["proxy_url"] = image["url"].replace(world.discord.cdn_base, elsewhere)
    video = world.discord.add_attachment(
        "move.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "video/mp4"
    )
    video["url"] = video["proxy_url"] = "https://videos.example.net/move.mp4"
    refusals = []
    async with running_bot(world):
        for subcommand, attachments in (
            ("sora", {"image": image}),
            ("omni", {"reference_video": video}),
        ):
            interaction = world.discord.slash_interaction(
                guild_id=world.guild_id,
                channel_id=world.channel_id,
                user_id=555_000_000_000_000_001,
                command_name="video",
                subcommand=subcommand,
                options={"prompt": "a fox"},
                attachments=attachments,
            )
            seen = len(world.discord.requests)
            await world.discord.dispatch("INTERACTION_CREATE", interaction)
            refusals.append(
                await world.discord.wait_for(
                    lambda r: r.path.endswith("/callback") and r.method == "POST",
                    timeout=15,
                    since=seen,
                )
            )
    for callback, field in zip(refusals, ("image", "reference_video"), strict=True):
        assert callback.json["type"] == 4 and callback.json["data"]["flags"] & 64
        content = callback.json["data"]["content"]
        assert field in content and "attached on Discord" in content
    assert world.api.uploads == {} and world.api.submit_attempts == []


async def test_a_dns_answer_that_changes_after_the_check_is_not_connected_to(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name passes the check, then resolves to a refused address for the
    connection. `0.0.0.0` is refused (unspecified) yet reaches this machine's 127.0.0.1 server,
    so a plain session would read the "metadata" here; the fetching session must not."""

    async def credentials(_: web.Request) -> web.Response:
        return web.Response(text="instance credentials")

    app = web.Application()
    app.router.add_get("/latest", credentials)
    server = await aiohttp_server(app, host="127.0.0.1")
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    answers: list[str] = []

    async def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return await real(host, port, *args, **kwargs)
        address = "127.0.0.1" if not answers else "0.0.0.0"  # allowed first, refused after
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding)
    url = f"http://rebind.test:{server.port}/latest"
    async with fetch_session(allow_local=True) as confined:
        with pytest.raises(FetchFailed):
            await fetch(confined, url, limit=1 << 20, timeout=5, policy=LOCAL, what="the video")
    assert answers == ["127.0.0.1", "0.0.0.0"]  # checked once, then asked again to connect
    # The same fetch through an ordinary session is the hole this closes.
    answers.clear()
    async with aiohttp.ClientSession() as plain:
        got = await fetch(plain, url, limit=1 << 20, timeout=5, policy=LOCAL, what="the video")
    assert got.data == b"instance credentials"


@pytest.mark.parametrize(
    "address",
    [
        "2002:a9fe:a9fe::1",  # 6to4 around 169.254.169.254
        "2002:0a00:0001::1",  # 6to4 around 10.0.0.1
        "2001:0:a9fe:a9fe::1",  # Teredo whose server is 169.254.169.254
        "::ffff:169.254.169.254",
    ],
)
def test_ipv6_forms_that_carry_a_private_ipv4_are_refused(address: str) -> None:
    assert _address_refusal(address, allow_local=True) is not None
    assert _address_refusal("2002:0808:0808::1", allow_local=False) is None  # 8.8.8.8: public
