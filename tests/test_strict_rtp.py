"""Strict RTP on the SIP leg (issue 11 item 5): no hijack by spraying the RTP range.

The leg used to latch onto the first packet from anywhere: an attacker spraying the port
range during set-up got the caller's voice and was played to the browser. Now only the
SDP's address is the peer at once; another source only after a probation of consecutive
packets of one stream; after learning only the learnt stream may move.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from gateway.calls.inbound import InboundCall
from gateway.config import User
from gateway.media import rtp, sip_leg
from gateway.media.ports import PortAllocator
from gateway.media.sip_leg import SipMediaLeg
from tests.support.gateway import gateway_config, running_gateway
from tests.support.sipp import SippUac, sipp_available
from tests.support.webrtc_client import WebRtcClient

ATTACKER = "127.0.0.7"
EVIL = b"\xee" * 160


class Endpoint(asyncio.DatagramProtocol):
    """A UDP socket that sends RTP and keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.sequence = 100

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.received.append(data)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def send(self, to: tuple[str, int], payload: bytes, *, ssrc: int, count: int = 1) -> None:
        assert self.transport is not None
        for _ in range(count):
            self.sequence = (self.sequence + 1) & 0xFFFF
            packet = rtp.build(0, self.sequence, self.sequence * 160, ssrc, payload)
            self.transport.sendto(packet, to)


@asynccontextmanager
async def endpoint(host: str) -> AsyncIterator[Endpoint]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Endpoint, local_addr=(host, 0))
    protocol.transport = transport
    try:
        yield protocol
    finally:
        transport.close()


@asynccontextmanager
async def leg(probation: int = 4) -> AsyncIterator[tuple[SipMediaLeg, list[bytes]]]:
    media = SipMediaLeg("127.0.0.1", PortAllocator(42000, 42010), probation=probation)
    heard: list[bytes] = []
    media.on_packet = lambda header: heard.append(header.payload)
    await media.open()
    try:
        yield media, heard
    finally:
        media.close()


async def until(condition: object, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_spray_before_and_during_the_call_is_dropped_and_counted() -> None:
    before = sip_leg.DROPPED.counts["source"]
    async with (
        leg() as (media, heard),
        endpoint("127.0.0.1") as peer,
        endpoint(ATTACKER) as attacker,
    ):
        here = ("127.0.0.1", media.port)
        media.set_remote(*peer.address)
        # During set-up: the attacker sprays first, even a full probation's worth of one
        # stream, then keeps spraying with changing SSRCs; then the peer speaks.
        attacker.send(here, EVIL, ssrc=0xBAD, count=3)
        attacker.send(here, EVIL, ssrc=0xBAD2, count=1)
        await until(lambda: media.stats.foreign >= 4)
        media.send(b"voice", 0, 160)
        peer.send(here, b"peer", ssrc=0x1234, count=5)
        await until(lambda: len(heard) >= 5)
        # During the call: consecutive packets of another stream are still refused.
        attacker.send(here, EVIL, ssrc=0xBAD3, count=20)
        await until(lambda: media.stats.foreign >= 24)
        for _ in range(5):
            media.send(b"voice", 0, 160)
        await until(lambda: len(peer.received) >= 6)
        assert attacker.received == []  # the caller's voice never went to the attacker
        assert EVIL not in heard and heard == [b"peer"] * 5
    assert sip_leg.DROPPED.counts["source"] - before == 24


async def test_peer_behind_nat_is_learnt_after_probation() -> None:
    async with leg(probation=4) as (media, heard), endpoint("127.0.0.1") as nat:
        here = ("127.0.0.1", media.port)
        media.set_remote("127.0.0.1", 9)  # the SDP names an address the peer never sends from
        nat.send(here, b"nat", ssrc=0x55, count=3)
        await until(lambda: media.stats.foreign == 3)
        assert heard == [] and media.remote == ("127.0.0.1", 9)
        nat.send(here, b"nat", ssrc=0x55, count=2)
        await until(lambda: len(heard) == 2)
        assert media.remote == nat.address  # learnt: our audio now goes where it came from
        media.send(b"voice", 0, 160)
        await until(lambda: len(nat.received) == 1)
        # A session refresh with the same SDP keeps it learnt; a new address relearns.
        media.set_remote("127.0.0.1", 9)
        assert media.remote == nat.address
        media.set_remote("127.0.0.1", 11)
        assert media.remote == ("127.0.0.1", 11)


async def test_learnt_stream_may_move_only_with_its_ssrc_after_probation() -> None:
    async with (
        leg(probation=4) as (media, heard),
        endpoint("127.0.0.1") as peer,
        endpoint("127.0.0.1") as rebound,
        endpoint(ATTACKER) as attacker,
    ):
        here = ("127.0.0.1", media.port)
        media.set_remote(*peer.address)
        peer.send(here, b"peer", ssrc=0x77, count=2)
        await until(lambda: len(heard) == 2)
        attacker.send(here, EVIL, ssrc=0x78, count=10)  # a guessed, wrong SSRC
        rebound.sequence = peer.sequence
        rebound.send(here, b"moved", ssrc=0x77, count=4)  # NAT rebinding: same stream
        await until(lambda: len(heard) == 3)
        assert heard[-1] == b"moved" and media.remote == rebound.address
        assert EVIL not in heard


async def test_the_sdp_address_wins_back_a_source_learnt_by_probation() -> None:
    async with (
        leg(probation=4) as (media, heard),
        endpoint("127.0.0.1") as peer,
        endpoint(ATTACKER) as attacker,
    ):
        here = ("127.0.0.1", media.port)
        media.set_remote(*peer.address)
        attacker.send(here, EVIL, ssrc=0xBAD, count=4)  # a sprayer that passes probation
        await until(lambda: len(heard) == 1)
        peer.send(here, b"peer", ssrc=0x99, count=1)
        await until(lambda: len(heard) == 2)
        assert media.remote == peer.address
        attacker.send(here, EVIL, ssrc=0xBAD, count=10)
        await until(lambda: media.stats.foreign >= 13)
        assert heard == [EVIL, b"peer"]


pytestmark_sipp = pytest.mark.skipif(not sipp_available(), reason="sipp not installed")


@pytestmark_sipp
@pytest.mark.sipp
async def test_rtp_spray_during_inbound_call_reaches_nobody() -> None:
    """A whole call: sipp calls a page, an attacker sprays the 10-pair RTP range from
    another address during set-up and during the call. Audio still flows both ways,
    nothing reaches the attacker, nothing of the attacker's reaches the browser leg."""
    alice = User(name="alice", extension="1001")
    config = gateway_config(users=(alice,), rtp_port_min=42100, rtp_port_max=42120)
    async with running_gateway(config) as running, AsyncExitStack() as stack:
        gateway = running.gateway
        page = await stack.enter_async_context(WebRtcClient(running.ws_url, user="alice"))
        attacker = await stack.enter_async_context(endpoint(ATTACKER))
        to_browser: list[bytes] = []

        def spray() -> None:
            for port in range(42100, 42120, 2):
                attacker.send(("127.0.0.1", port), EVIL, ssrc=0xE71, count=2)

        uac = SippUac(
            "uac_inbound_call",
            target=f"127.0.0.1:{gateway.sip_port}",
            service="1001",
            rtp_echo=True,
        )
        async with uac:
            incoming = await page.expect("incoming")
            spray()  # during set-up: the SIP leg exists, no peer learnt yet
            call = next(c for c in gateway.active_calls() if isinstance(c, InboundCall))
            await page.answer_incoming(incoming)
            await page.expect("answer")
            browser = call._browser
            assert browser is not None
            original = browser.send

            def watch(payload: bytes, timestamp: int) -> None:
                to_browser.append(payload)
                original(payload, timestamp)

            browser.send = watch  # type: ignore[method-assign]
            for _ in range(5):
                spray()
                await asyncio.sleep(0.1)
            heard = await page.wait_for_tone(1000)
            assert abs(heard - 1000) < 20, f"heard {heard:.0f} Hz"
            sip_media = call._sip_media
            assert sip_media is not None and sip_media.stats.foreign > 0
            await page.expect("hangup", timeout=10)
            assert await uac.wait(timeout=10) == 0, uac.summary()
        assert attacker.received == []
        assert to_browser and EVIL not in to_browser
