"""SIP-side exposure (issue 11 item 8): only trusted sources may start anything, an untrusted
one learns nothing about users, and a flood from one address is cut off by a per-source
rate limit, in bounded memory. The attacker binds another loopback address than 127.0.0.1
(all of 127.0.0.0/8 is local on Linux)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from gateway.config import ConfigError, User, from_mapping, parse_trunk
from gateway.security import SecurityEvent
from gateway.sip.guard import GuardSettings, Pike, TrustedSources
from tests.support.gateway import RunningGateway, gateway_config, running_gateway
from tests.support.sip_probe import Reply, SipProbe
from tests.support.webrtc_client import WebRtcClient

ATTACKER = "127.0.0.5"
ALICE = User(name="alice", extension="1001")
# Headers a response copies from the request (RFC 3261 section 8.2.6.2): they differ only
# by what the scanner itself sent.
ECHOED = {"via", "from", "to", "call-id", "cseq"}


@asynccontextmanager
async def gateway(**guard: Any) -> AsyncIterator[RunningGateway]:
    changes = guard.pop("changes", {})
    config = gateway_config(users=(ALICE,), sip_guard=GuardSettings(**guard), **changes)
    async with running_gateway(config) as running:
        yield running


def leaky_part(reply: Reply) -> tuple[str, list[tuple[str, str]]]:
    return reply.status, [(k.lower(), v) for k, v in reply.headers if k.lower() not in ECHOED]


# --- pure parts ------------------------------------------------------------------------


def test_pike_blocks_over_the_rate_and_unblocks_after_the_block_time() -> None:
    now = [0.0]
    pike = Pike(rate=10, burst=5, block_seconds=2, clock=lambda: now[0])
    assert [pike.admit("a")[0] for _ in range(5)] == [True] * 5
    assert pike.admit("a") == (False, True)  # the sixth at once: blocked, reported once
    assert pike.admit("a") == (False, False)
    assert pike.admit("b") == (True, False)  # others are not affected
    now[0] = 1.9
    assert pike.admit("a") == (False, False)
    assert (pike.blocks, pike.dropped, pike.blocked) == (1, 3, 1)
    now[0] = 2.1
    assert pike.admit("a") == (True, False)
    assert pike.blocked == 0
    # At the rate, never blocked: 10/s for 3 s.
    for _ in range(30):
        now[0] += 0.1
        assert pike.admit("c")[0]


def test_pike_memory_is_bounded_under_a_spray() -> None:
    now = [0.0]
    pike = Pike(rate=1, burst=1, block_seconds=60, max_sources=100, clock=lambda: now[0])
    for i in range(10_000):
        source = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        pike.admit(source)
        pike.admit(source)  # blocked
        now[0] += 0.001
    assert pike.sources <= 100 and pike.blocked <= 100
    assert pike.blocks == 10_000


def test_trusted_sources_default_and_configured() -> None:
    loopback = TrustedSources(("127.0.0.1/32", "::1/128"))
    assert "127.0.0.1" in loopback and "::1" in loopback and "::ffff:127.0.0.1" in loopback
    assert ATTACKER not in loopback and "not an address" not in loopback
    loopback.set_addresses(["192.0.2.7"])
    assert "192.0.2.7" in loopback and "192.0.2.8" not in loopback


def test_settings_are_parsed_and_checked() -> None:
    config = from_mapping({"sip": {"trusted": ["10.0.0.0/8"], "rate_limit": 5, "rate_burst": 9}})
    assert config.sip_guard == GuardSettings(trusted=("10.0.0.0/8",), rate_limit=5, rate_burst=9)
    assert from_mapping({}).sip_guard.trusted is None  # loopback by default
    for bad in ({"trusted": ["10.0.0.300/8"]}, {"rate_limit": -1}, {"block_seconds": 0}):
        with pytest.raises(ConfigError):
            from_mapping({"sip": bad})


# --- trusted sources ---------------------------------------------------------------------


async def test_untrusted_invite_gets_the_same_403_for_every_user_and_rings_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        gateway() as running,
        WebRtcClient(running.ws_url, user="alice") as page,
        SipProbe(ATTACKER, running.gateway.sip_port) as attacker,
    ):
        with caplog.at_level(logging.WARNING, logger="gateway.security"):
            existing = await attacker.invite("1001")  # alice, online: would ring her page
            missing = await attacker.invite("9999")
            offline = await attacker.invite("alice-offline")
        assert existing.code == 403
        assert leaky_part(existing) == leaky_part(missing) == leaky_part(offline)
        assert f"SECURITY event=untrusted-invite src={ATTACKER}" in caplog.text
        # Anything else that could start something is refused alike; OPTIONS stays open.
        for method in ("MESSAGE", "SUBSCRIBE", "REFER", "REGISTER", "NOTIFY", "INFO"):
            call_id, _ = attacker.request(method, "1001")
            reply = await attacker.final(call_id)
            assert leaky_part(reply)[0] == existing.status, method
        call_id, _ = attacker.request("OPTIONS", "1001")
        assert (await attacker.final(call_id)).code == 200
        # The same INVITE from 127.0.0.1 (trusted by default) rings the page: it was
        # listening all along, and the 403s above sent it nothing.
        async with SipProbe("127.0.0.1", running.gateway.sip_port) as trusted:
            call_id, _ = trusted.request("INVITE", "1001")
            incoming = await page.expect("incoming")
            assert [m for m in page.messages if m["type"] == "incoming"] == [incoming]
            await page.reject(incoming)
            assert (await trusted.final(call_id)).code >= 400
        assert running.gateway.security.counts[SecurityEvent.UNTRUSTED_INVITE] == 9
        assert running.gateway.sip_guard.refused == 9


async def test_configured_networks_replace_the_loopback_default() -> None:
    async with (
        gateway(trusted=(f"{ATTACKER}/32",)) as running,
        WebRtcClient(running.ws_url, user="alice") as page,
    ):
        async with SipProbe(ATTACKER, running.gateway.sip_port) as listed:
            call_id, _ = listed.request("INVITE", "1001")
            incoming = await page.expect("incoming")
            await page.reject(incoming)
            assert (await listed.final(call_id)).code >= 400
        async with SipProbe("127.0.0.1", running.gateway.sip_port) as loopback:
            assert (await loopback.invite("1001")).code == 403


async def test_account_hosts_are_trusted_by_their_resolved_address() -> None:
    # "localhost" is looked up (getaddrinfo) at start; the proxy is an address already.
    trunk = replace(
        parse_trunk("sip:localhost:5999"), outbound_proxy=parse_trunk("127.0.0.7:5999").uri
    )
    changes = {"trunk": None, "accounts": (trunk,)}
    async with (
        gateway(trusted=("127.0.0.9/32",), changes=changes) as running,
        WebRtcClient(running.ws_url, user="alice") as page,
    ):
        for host in ("127.0.0.1", "127.0.0.7"):
            async with SipProbe(host, running.gateway.sip_port) as account:
                call_id, _ = account.request("INVITE", "1001")
                incoming = await page.expect("incoming")
                await page.reject(incoming)
                assert (await account.final(call_id)).code >= 400, host
        async with SipProbe(ATTACKER, running.gateway.sip_port) as attacker:
            assert (await attacker.invite("1001")).code == 403


# --- the rate limit --------------------------------------------------------------------


async def _metrics(running: RunningGateway) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{running.url}metrics") as response:
            return await response.text()


async def _flood(probe: SipProbe, count: int) -> None:
    # One datagram per loop turn: the in-process gateway reads each before the next, so
    # the kernel drops none and every one is either answered or dropped by the gateway.
    for _ in range(count):
        probe.request("OPTIONS", "1001")
        await asyncio.sleep(0)


async def _wait(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_flood_is_blocked_silently_then_unblocked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flood = 500
    async with (
        gateway(rate_limit=20, rate_burst=50, block_seconds=1.0) as running,
        SipProbe("127.0.0.6", running.gateway.sip_port) as attacker,
        SipProbe("127.0.0.1", running.gateway.sip_port) as trusted,
    ):
        pike = running.gateway.sip_guard.pike
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="gateway.security"):
            await _flood(attacker, flood)
            await _wait(lambda: attacker.replies.qsize() + pike.dropped == flood)
        elapsed = time.monotonic() - started
        answered = attacker.replies.qsize()
        assert 50 <= answered <= 50 + 20 * elapsed + 1, (answered, elapsed)
        assert (pike.blocks, pike.dropped) == (1, flood - answered)
        assert caplog.text.count("SECURITY event=rate-limited src=127.0.0.6") == 1
        metrics = await _metrics(running)
        assert "sipgw_sip_rate_limit_blocks_total 1\n" in metrics
        assert f"sipgw_sip_rate_limit_dropped_total {flood - answered}\n" in metrics
        assert "sipgw_sip_rate_limit_blocked 1\n" in metrics
        assert 'sipgw_security_events_total{event="rate-limited"} 1\n' in metrics
        while not attacker.replies.empty():
            attacker.replies.get_nowait()
        # Blocked: an INVITE gets no answer at all (not even 100 Trying) and makes no
        # transaction. The trusted probe's OPTIONS, sent after it, is read after it.
        transactions = running.gateway.ua.tl.active
        attacker.request("INVITE", "1001")
        call_id, _ = trusted.request("OPTIONS", "1001")
        assert (await trusted.final(call_id)).code == 200
        assert attacker.replies.empty()
        assert running.gateway.ua.tl.active <= transactions + 1  # the trusted OPTIONS only
        # Trusted sources are exempt: the same flood from 127.0.0.1 is answered in full.
        await _flood(trusted, flood)
        await _wait(lambda: trusted.replies.qsize() == flood)
        assert pike.blocks == 1
        # After block_seconds the attacker is served again.
        reply = None
        async with asyncio.timeout(5):
            while reply is None:
                call_id, _ = attacker.request("OPTIONS", "1001")
                with contextlib.suppress(TimeoutError):
                    reply = await attacker.final(call_id, timeout=0.2)
        assert reply.code == 200
        assert time.monotonic() - started >= 1.0


async def test_bucket_table_stays_bounded_under_a_spray_from_many_addresses() -> None:
    sources = 300
    async with gateway(rate_limit=1, rate_burst=2, block_seconds=60) as running:
        guard = running.gateway.sip_guard
        guard.pike.max_sources = 50
        port = running.gateway.sip_port
        for i in range(sources):
            host = f"127.1.{i // 250}.{i % 250 + 1}"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((host, 0))
                for _ in range(3):  # the third is over the burst: blocked
                    sock.sendto(_options(host, sock.getsockname()[1], port), ("127.0.0.1", port))
                    await asyncio.sleep(0)
        await _wait(lambda: guard.pike.blocks == sources)
        assert guard.pike.sources <= 50 and guard.pike.blocked <= 50
        assert running.gateway.security.counts[SecurityEvent.RATE_LIMITED] == sources
        async with SipProbe("127.0.0.1", port) as trusted:
            call_id, _ = trusted.request("OPTIONS", "1001")
            assert (await trusted.final(call_id)).code == 200


def _options(host: str, port: int, target: int) -> bytes:
    return (
        f"OPTIONS sip:1001@127.0.0.1:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{time.monotonic_ns()}\r\n"
        f"From: <sip:spray@{host}>;tag=1\r\nTo: <sip:1001@127.0.0.1>\r\n"
        f"Call-ID: {time.monotonic_ns()}@{host}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
