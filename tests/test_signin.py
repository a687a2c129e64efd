"""Sign-in: lockout after failed hellos, password hashes, signed tokens, the Origin check
and the per-address socket cap (issue 11, item 7). Attacks bounded, loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from gateway import cli
from gateway.config import User
from gateway.security import SecurityEvent
from gateway.signin import passwords, tokens
from gateway.signin.lockout import Lockout
from gateway.signin.origins import origin_allowed
from gateway.signin.settings import SignInSettings
from tests.support.audio import write_tone_wav
from tests.support.browser import CHROMIUM, chromium_args, chromium_available
from tests.support.gateway import RunningGateway, gateway_config, running_gateway

SECRET = "a-test-secret-of-at-least-32-characters!"
ALICE_PW = "correct horse battery staple"
ALICE = User(name="alice", password_hash=passwords.hash_password(ALICE_PW), extension="201")
BOB = User(name="bob", password="bob-plain-pw", extension="202")


def settings(**changes: Any) -> SignInSettings:
    return replace(SignInSettings(failure_delay=0.0, token_secret=SECRET), **changes)


@contextlib.asynccontextmanager
async def gateway_with(**changes: Any) -> AsyncIterator[RunningGateway]:
    config = gateway_config(users=(ALICE, BOB), signin=settings(**changes))
    async with running_gateway(config) as running:
        yield running


@contextlib.asynccontextmanager
async def socket(
    url: str, *, src: str = "127.0.0.1", headers: dict[str, str] | None = None
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    connector = aiohttp.TCPConnector(local_addr=(src, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.ws_connect(url, headers=headers) as ws,
    ):
        yield ws


async def hello(ws: aiohttp.ClientWebSocketResponse, **fields: str) -> dict[str, Any]:
    await ws.send_str(json.dumps({"type": "hello", **fields}))
    reply: dict[str, Any] = json.loads(await ws.receive_str(timeout=10))
    return reply


def refused(reply: dict[str, Any]) -> bool:
    return reply == {
        "type": "error",
        "code": "auth-failed",
        "message": "unknown user or wrong password",
    }


# --- the lockout, end to end ------------------------------------------------------------


async def test_fifty_wrong_guesses_lock_the_user_out_even_for_the_right_password() -> None:
    async with (
        gateway_with(lockout_time=1.0, lockout_max_time=2.0) as running,
        socket(running.ws_url) as ws,
    ):
        security = running.gateway.security
        for i in range(50):
            assert refused(await hello(ws, user="alice", token=f"guess-{i}"))
        # The right password now gets the very same answer as a wrong one.
        assert refused(await hello(ws, user="alice", token=ALICE_PW))
        assert security.counts[SecurityEvent.AUTH_FAILED] == 51
        # One lockout for the user, one for the address: the locked-out attempts are not
        # counted as more failures (a lockout ends while someone keeps guessing).
        assert security.counts[SecurityEvent.LOCKOUT] == 2
        await asyncio.sleep(1.1)  # the (configured, short) lockout passes
        reply = await hello(ws, user="alice", token=ALICE_PW)
        assert reply["type"] == "welcome" and reply["user"] == "alice"


async def test_user_and_address_are_locked_separately() -> None:
    async with gateway_with(lockout_failures=3, lockout_time=30.0) as running:
        url = running.ws_url
        async with socket(url, src="127.0.0.1") as ws:
            for _ in range(3):
                assert refused(await hello(ws, user="alice", token="wrong"))
            # This address is locked: even bob's right password is refused from it.
            assert refused(await hello(ws, user="bob", token="bob-plain-pw"))
        async with socket(url, src="127.0.0.2") as ws:
            # alice is locked from everywhere; bob signs in from another address.
            assert refused(await hello(ws, user="alice", token=ALICE_PW))
            assert (await hello(ws, user="bob", token="bob-plain-pw"))["type"] == "welcome"


async def test_a_hello_without_credentials_is_not_counted() -> None:
    """The page's first hello has no credentials: reloading it must not lock anyone out."""
    async with gateway_with(lockout_failures=2) as running, socket(running.ws_url) as ws:
        for _ in range(5):
            assert refused(await hello(ws))
        assert (await hello(ws, user="bob", token="bob-plain-pw"))["type"] == "welcome"
        assert running.gateway.security.counts[SecurityEvent.AUTH_FAILED] == 0


async def test_failure_delay_does_not_hold_up_other_sessions() -> None:
    async with gateway_with(failure_delay=1.0) as running:
        async with socket(running.ws_url) as slow, socket(running.ws_url) as fast:
            await slow.send_str(json.dumps({"type": "hello", "user": "alice", "token": "x"}))
            started = time.monotonic()
            assert (await hello(fast, user="bob", token="bob-plain-pw"))["type"] == "welcome"
            assert time.monotonic() - started < 0.5
            assert refused(json.loads(await slow.receive_str(timeout=5)))
            assert time.monotonic() - started >= 0.9


async def test_concurrent_hash_checks_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    running_now = 0
    most = 0
    real = passwords.verify_hash

    def counting(encoded: str, password: str) -> bool:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        try:
            return real(encoded, password)
        finally:
            running_now -= 1

    monkeypatch.setattr(passwords, "verify_hash", counting)
    async with gateway_with(max_hash_checks=2, lockout_failures=100) as running:
        async with contextlib.AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(socket(running.ws_url)) for _ in range(8)]
            replies = await asyncio.gather(*(hello(ws, user="alice", token="no") for ws in sockets))
        assert all(refused(r) for r in replies)
        assert most == 2


# --- signed tokens ------------------------------------------------------------------------


def _forged(claims: dict[str, Any]) -> str:
    """alg=none: an unsigned token claiming to be alice's."""
    return jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]


async def test_a_signed_token_signs_in_and_bad_ones_are_failures() -> None:
    now = int(time.time())
    valid = tokens.mint(SECRET, "alice", 60)
    header, body, signature = valid.split(".")
    bad = {
        "expired": tokens.mint(SECRET, "alice", 60, now=now - 3600),
        "tampered": f"{header}.{body[:-2]}{'AA' if body[-2:] != 'AA' else 'BB'}.{signature}",
        "wrong-secret": tokens.mint("another-secret-of-at-least-32-chars!!", "alice", 60),
        "alg-none": _forged({"sub": "alice", "exp": now + 60}),
        "no-exp": jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),
        "unknown-user": tokens.mint(SECRET, "mallory", 60),
    }
    async with gateway_with(lockout_failures=100) as running, socket(running.ws_url) as ws:
        security = running.gateway.security
        for name, token in bad.items():
            assert refused(await hello(ws, token=token)), name
        assert security.counts[SecurityEvent.AUTH_FAILED] == len(bad)
        # A token for alice presented with another user name is refused too.
        assert refused(await hello(ws, user="bob", token=valid))
        reply = await hello(ws, token=valid)
        assert reply["type"] == "welcome" and reply["user"] == "alice"
        assert reply["extension"] == "201"


async def test_token_audience_and_issuer_are_checked() -> None:
    async with (
        gateway_with(token_audience="sipgw", token_issuer="crm") as running,
        socket(running.ws_url) as ws,
    ):
        assert refused(await hello(ws, token=tokens.mint(SECRET, "alice", 60)))
        assert refused(await hello(ws, token=tokens.mint(SECRET, "alice", 60, audience="sipgw")))
        good = tokens.mint(SECRET, "alice", 60, audience="sipgw", issuer="crm")
        assert (await hello(ws, token=good))["type"] == "welcome"


async def test_token_only_gateway_takes_the_name_from_the_token() -> None:
    config = gateway_config(signin=settings())
    async with running_gateway(config) as running, socket(running.ws_url) as ws:
        assert refused(await hello(ws, user="guest"))  # no anonymous sessions any more
        reply = await hello(ws, token=tokens.mint(SECRET, "agent-17", 60))
        assert reply["type"] == "welcome" and reply["user"] == "agent-17"


# --- the WebSocket upgrade: Origin and sockets per address --------------------------------


async def _upgrade_status(url: str, headers: dict[str, str]) -> int:
    try:
        async with socket(url, headers=headers):
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def test_pages_of_other_origins_are_refused_at_the_upgrade() -> None:
    async with gateway_with() as running:
        url, port = running.ws_url, running.http_port
        assert await _upgrade_status(url, {"Origin": "https://evil.example"}) == 403
        assert await _upgrade_status(url, {"Origin": "null"}) == 403
        # DNS rebinding: a hostile name resolving to the loopback gateway.
        rebound = {"Origin": f"http://evil.example:{port}", "Host": f"evil.example:{port}"}
        assert await _upgrade_status(url, rebound) == 403
        assert running.gateway.security.counts[SecurityEvent.ORIGIN_REFUSED] == 3
        # The gateway's own page, a loopback page on another port, and a program (no Origin).
        assert await _upgrade_status(url, {"Origin": f"http://127.0.0.1:{port}"}) == 101
        assert await _upgrade_status(url, {"Origin": "http://localhost:3000"}) == 101
        assert await _upgrade_status(url, {}) == 101


async def test_configured_origins_replace_the_defaults() -> None:
    async with gateway_with(allowed_origins=("https://phone.example.com",)) as running:
        url = running.ws_url
        assert await _upgrade_status(url, {"Origin": "https://phone.example.com"}) == 101
        assert await _upgrade_status(url, {"Origin": "http://phone.example.com"}) == 403
        assert await _upgrade_status(url, {"Origin": "http://localhost:3000"}) == 403


async def test_sockets_per_address_are_capped() -> None:
    async with gateway_with(max_sockets_per_address=3) as running:
        url = running.ws_url
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                await stack.enter_async_context(socket(url))
            assert await _upgrade_status(url, {}) == 429
            # Another address has its own allowance.
            async with socket(url, src="127.0.0.2") as ws:
                assert (await hello(ws, user="bob", token="bob-plain-pw"))["type"] == "welcome"
        assert running.gateway.security.counts[SecurityEvent.SOCKET_LIMIT] == 1
        # Closed sockets give their places back.
        async with asyncio.timeout(5):
            while await _upgrade_status(url, {}) != 101:
                await asyncio.sleep(0.05)


# --- the pieces on their own --------------------------------------------------------------


def test_lockout_grows_and_memory_is_bounded() -> None:
    now = [0.0]
    lockout = Lockout(failures=2, window=10, base=5, maximum=20, capacity=100, clock=lambda: now[0])
    assert lockout.fail("k") is None
    assert lockout.fail("k") == 5
    assert lockout.locked("k")
    now[0] += 5
    assert not lockout.locked("k")
    lockout.fail("k")
    assert lockout.fail("k") == 10  # doubled
    now[0] += 10
    lockout.fail("k")
    assert lockout.fail("k") == 20
    now[0] += 20
    lockout.fail("k")
    assert lockout.fail("k") == 20  # capped
    for i in range(10_000):
        lockout.fail(f"spray-{i}")
    assert len(lockout) <= 100


def test_password_hashes() -> None:
    encoded = passwords.hash_password("pw")
    assert encoded.startswith("$argon2id$") and passwords.is_hash(encoded)
    assert passwords.verify_hash(encoded, "pw")
    assert not passwords.verify_hash(encoded, "PW")
    assert not passwords.is_hash("plain")


@pytest.mark.parametrize(
    ("origin", "host", "loopback", "allowed"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True, True),
        ("https://phone.example.com", "phone.example.com", False, True),
        ("http://phone.example.com", "phone.example.com", False, True),
        ("https://evil.example", "phone.example.com", False, False),
        ("http://localhost:5173", "phone.example.com", False, True),
        ("http://127.0.0.1.evil.example", "127.0.0.1:8080", True, False),
        ("http://[::1]:9", "127.0.0.1:8080", True, True),
        ("http://a@127.0.0.1:8080", "127.0.0.1:8080", True, False),
        (None, "127.0.0.1:8080", True, True),
    ],
)
def test_origin_patterns(origin: str | None, host: str, loopback: bool, allowed: bool) -> None:
    patterns = SignInSettings().allowed_origins
    assert origin_allowed(origin, host, patterns, gateway_on_loopback=loopback) is allowed


# --- a real browser on a page of another site ---------------------------------------------

ATTACK_PAGE = """<!doctype html><script>
window.result = new Promise((resolve) => {
  const ws = new WebSocket(new URLSearchParams(location.search).get("ws"));
  ws.onopen = () => ws.send(JSON.stringify({type: "hello"}));
  ws.onmessage = (event) => resolve("message:" + JSON.parse(event.data).type);
  ws.onclose = () => resolve("closed");
});
</script>"""


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Debian package chromium not installed")
async def test_a_page_on_another_site_gets_no_session_in_chromium(
    demo_gateway: RunningGateway, tmp_path: Path
) -> None:
    """With no [[users]] (the zero-configuration gateway), a page on https://evil.example
    used to get a session and could place calls from any visitor's browser."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=ATTACK_PAGE, content_type="text/html")

    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    args = chromium_args(write_tone_wav(tmp_path / "mic.wav", 1000.0, seconds=2))
    # evil.example resolves to the loopback server, as a hostile site would to its own.
    args = [
        "--host-resolver-rules=MAP evil.example 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
        if a.startswith("--host-resolver-rules")
        else a
        for a in args
    ]
    query = f"?ws={demo_gateway.ws_url}"
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=args
            )
            try:
                page = await browser.new_page()
                await page.goto(f"http://evil.example:{port}/{query}")
                assert await page.evaluate("window.result") == "closed"
                assert demo_gateway.gateway.security.counts[SecurityEvent.ORIGIN_REFUSED] == 1
                assert not demo_gateway.gateway.sessions
                # The same page on a loopback origin (allowed by default) does get one.
                await page.goto(f"http://127.0.0.1:{port}/{query}")
                assert await page.evaluate("window.result") == "message:welcome"
            finally:
                await browser.close()
    finally:
        await runner.cleanup()


# --- the command line -----------------------------------------------------------------------


def test_cli_hash_password_and_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert cli.main(["hash-password"]) == 0
    encoded = capsys.readouterr().out.strip()
    assert passwords.verify_hash(encoded, "s3cret")
    config = tmp_path / "sipgw.toml"
    config.write_text(
        f'[auth]\ntoken_secret = "{SECRET}"\ntoken_audience = "sipgw"\n'
        f'[[users]]\nname = "alice"\npassword_hash = "{encoded}"\n'
    )
    assert cli.main(["token", "alice", "--config", str(config), "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    assert tokens.verify(token, SECRET, audience="sipgw") == "alice"
    assert cli.main(["token", "mallory", "--config", str(config)]) == 2
    assert "no user 'mallory'" in capsys.readouterr().err
