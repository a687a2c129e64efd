"""The dialling policy and call caps through the page's WebSocket: refused calls get
`error {code: "not-allowed"}` and a security event, allowed ones reach the trunk, and one
user's calls are capped across all of its sockets (issue 11, item 6)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import Config, DialPlan, User, parse_trunk
from gateway.policy import PolicySettings, Rules
from gateway.security import SecurityEvent
from gateway.signin.settings import SignInSettings
from tests.support.gateway import RunningGateway, gateway_config, running_gateway
from tests.support.sipp import SippUas, sipp_available

CHROME_OFFER = (Path(__file__).parent / "sdp_corpus" / "chrome_offer_gathered.sdp").read_text()
ALICE = User(name="alice", password="pw", extension="201")
BOB = User(name="bob", password="pw", extension="202")


class Page:
    """A bare page: hello, then `call` messages, no media (the refusals come first)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read(self) -> None:
        async for message in self.ws:
            self.messages.put_nowait(json.loads(message.data))

    async def expect(self, *types: str, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.messages.get()
                if message["type"] in types:
                    return message

    async def call(self, call_id: str, to: str) -> None:
        await self.ws.send_json({"type": "call", "id": call_id, "to": to, "sdp": CHROME_OFFER})


@asynccontextmanager
async def pages(running: RunningGateway, user: User, count: int) -> AsyncIterator[list[Page]]:
    async with aiohttp.ClientSession() as http, AsyncExitStack() as stack:
        opened = []
        for _ in range(count):
            ws = await stack.enter_async_context(http.ws_connect(running.ws_url))
            page = Page(ws)
            task = asyncio.ensure_future(page.read())
            stack.callback(task.cancel)
            await ws.send_json({"type": "hello", "user": user.name, "token": user.password})
            await page.expect("welcome")
            opened.append(page)
        yield opened


@contextmanager
def silent_trunk() -> Iterator[int]:
    """A UDP port on loopback that takes SIP and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def counted(running: RunningGateway, event: SecurityEvent) -> int:
    return running.gateway.security.counts[event]


@pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)")
async def test_premium_and_satellite_numbers_refused_national_number_goes_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with SippUas("uas_busy") as uas:
        config = gateway_config(
            trunk=parse_trunk(f"sip:127.0.0.1:{uas.port}"),
            users=(ALICE,),
            dial_plan=DialPlan(country_code="44"),
        )
        async with running_gateway(config) as running, pages(running, ALICE, 1) as (page,):
            with caplog.at_level(logging.WARNING, logger="gateway.security"):
                for index, number in enumerate(["+1 900 555 0100", "00881 6123 4567", "+8825678"]):
                    await page.call(f"premium{index}", number)
                    error = await page.expect("error", "ringing", "hangup")
                    assert (error["type"], error["id"], error["code"]) == (
                        "error",
                        f"premium{index}",
                        "not-allowed",
                    ), error
                    assert "not allowed" in error["message"]
            assert counted(running, SecurityEvent.POLICY_REFUSED) == 3
            assert any(
                m.startswith('SECURITY event=policy-refused src=127.0.0.1 user="alice"')
                and "+1900" in m
                for m in caplog.messages
            ), caplog.messages
            async with aiohttp.ClientSession() as http:
                metrics = await (await http.get(running.url + "metrics")).text()
            assert (
                'sipp_security_events_total{event="policy-refused"} 3'.replace("sipp", "sipgw")
                in metrics
            )
            # Nothing reached the trunk and nothing was left behind.
            assert not uas.received("INVITE")
            assert running.gateway.ports.in_use == 0 and not running.gateway.active_calls()
            # A national number is E.164 inside +44: it goes to the trunk (busy there).
            await page.call("london", "020 7946 0958")
            assert (await page.expect("hangup", "error"))["code"] == 486
            assert await uas.wait(timeout=10) == 0, uas.summary()
    (invite,) = uas.received("INVITE")
    assert invite.startswith("INVITE sip:+442079460958@127.0.0.1")


async def test_one_users_calls_are_capped_across_all_its_sockets() -> None:
    # A trunk that never answers: accepted calls stay in "calling" for Timer B
    # (64 * T1 = 3.2 s), long enough for all 100 attempts to land.
    with silent_trunk() as port:
        config = gateway_config(
            trunk=parse_trunk(f"sip:127.0.0.1:{port}"),
            users=(ALICE,),
            policy=PolicySettings(rules=Rules(max_calls=3, calls_per_minute=0)),
            # 25 sockets from one address: past the default per-address cap (20).
            signin=SignInSettings(max_sockets_per_address=0),
        )
        await capped(config)


async def capped(config: Config) -> None:
    async with running_gateway(config) as running, pages(running, ALICE, 25) as opened:
        # 4 calls per socket: the per-session limit (4) is not what stops them.
        await asyncio.gather(
            *(page.call(f"c{i}-{n}", "100") for i, page in enumerate(opened) for n in range(4))
        )
        # All attempts are answered at once (refused) or are under way: 3 calls, no more.
        async with asyncio.timeout(3):
            while counted(running, SecurityEvent.CALL_LIMIT) < 97:
                await asyncio.sleep(0.01)
        assert running.gateway.router.limiter.active("user:alice") == 3
        assert len(running.gateway.active_calls()) == 3
        outcomes: dict[str, int] = {}
        for page in opened:
            for _ in range(4):
                message = await page.expect("error", "hangup", timeout=10)
                if message["type"] == "error":
                    assert message["code"] == "not-allowed", message
                    assert "max_calls" in message["message"]
                key = message.get("code", "?")
                outcomes[str(key)] = outcomes.get(str(key), 0) + 1
        # The 3 calls that went out ended at Timer B; the page was told.
        assert outcomes == {"not-allowed": 97, "408": 3}
        assert counted(running, SecurityEvent.CALL_LIMIT) == 97
        # The accepted ones time out; then the cap is free again.
        async with asyncio.timeout(10):
            while running.gateway.router.limiter.active("user:alice"):
                await asyncio.sleep(0.05)
        await opened[0].call("again", "100")
        assert (await opened[0].expect("error", "hangup", timeout=10))["type"] == "hangup"


async def test_browser_to_browser_calls_count_toward_the_cap() -> None:
    alice = User(name="alice", password="pw", extension="201", policy=Rules(max_calls=1))
    with silent_trunk() as port:
        config = gateway_config(trunk=parse_trunk(f"sip:127.0.0.1:{port}"), users=(alice, BOB))
        await peer_then_outbound(config, alice)


async def peer_then_outbound(config: Config, alice: User) -> None:
    async with (
        running_gateway(config) as running,
        pages(running, BOB, 1) as (bob,),
        pages(running, alice, 1) as (page,),
    ):
        await page.call("to-bob", "202")  # not E.164: no number policy, but a call
        await bob.expect("incoming")
        await page.call("out", "100")
        error = await page.expect("error")
        assert (error["id"], error["code"]) == ("out", "not-allowed")
