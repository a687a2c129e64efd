"""The one module that touches aiortc and aioice internals (pinned to aiortc 1.16.x).

The gateway keeps aiortc for ICE, DTLS and the SRTP keys, and moves RTP itself:
- incoming: the DTLS transport's decrypted RTP goes to our header parser and the bridge,
  skipping aiortc's RtpPacket parsing, router, jitter buffer (80-280 ms) and decoder
  thread; that also removes aiortc's struct.error crash on malformed header extensions
  (aiortc issues 745, 770, 778), since our parser only reads the fixed header;
- outgoing: payloads are packetised here, protected with aiortc's SRTP session and sent on
  the nominated ICE pair's socket, skipping aiortc's sender task, per-packet header
  extensions and executor hops.
RTCP stays aiortc's. Everything behind `MediaTap` can be replaced without touching the
rest of the gateway.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aioice
import aioice.ice
import aiortc.rtcpeerconnection
import pylibsrtp
from aiortc import (
    MediaStreamTrack,
    RTCCertificate,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.mediastreams import MediaStreamError

from gateway.media import rtp

log = logging.getLogger(__name__)

# (payload type, sequence number, timestamp, marker, payload)
PacketSink = Callable[[int, int, int, bool, bytes], None]

_original_get_host_addresses = aioice.ice.get_host_addresses
_ice_addresses: list[str] | None = None


def configure_ice_addresses(addresses: Sequence[str] | None) -> None:
    """Offer ICE host candidates on exactly these addresses (None: aioice's own choice).

    aioice never gathers loopback addresses and otherwise gathers every interface; a
    gateway wants its public or chosen interface, and tests want 127.0.0.1 only.
    This is process-wide because aioice reads it from a module function.
    """
    global _ice_addresses
    _ice_addresses = list(addresses) if addresses else None
    aioice.ice.get_host_addresses = _host_addresses


class _SharedCertificate:
    """One DTLS certificate (and SSL context) for every browser leg, renewed hourly.

    aiortc makes a key, a certificate and an OpenSSL context per peer connection; that
    is a measurable part of a call setup, and the certificate is self-signed and only
    identified by its fingerprint in the SDP, so sharing it (as Janus does) loses nothing.
    """

    LIFETIME = 3600.0

    def __init__(self) -> None:
        self._certificate: Any = None
        self._created = 0.0
        self._contexts: dict[tuple[str, ...], Any] = {}

    def get(self) -> Any:
        now = time.monotonic()
        if self._certificate is None or now - self._created > self.LIFETIME:
            self._certificate = _generate_certificate()
            self._created = now
            self._contexts = {}
            create = self._certificate._create_ssl_context
            contexts = self._contexts

            def shared_context(srtp_profiles: list[Any]) -> Any:
                key = tuple(str(p.openssl_profile) for p in srtp_profiles)
                if key not in contexts:
                    contexts[key] = create(srtp_profiles)
                return contexts[key]

            self._certificate._create_ssl_context = shared_context
            # aiortc hashes the certificate's DER again for every offer and answer.
            fingerprints = self._certificate.getFingerprints()
            self._certificate.getFingerprints = lambda: list(fingerprints)
        return self._certificate


_generate_certificate = RTCCertificate.generateCertificate
_shared_certificate = _SharedCertificate()


class _CodecCopy:
    """Stands in for the `copy` module inside aiortc.rtcpeerconnection, whose only use of it
    is deep-copying each negotiated codec in setRemoteDescription: 4 % of an inbound call's
    set-up through copy's generic machinery. A codec holds strings, ints, a list of
    feedback entries (strings, never modified) and a dict of strings and ints, so copying
    the list and the dict gives the same independent copy."""

    @staticmethod
    def deepcopy(value: Any) -> Any:
        if type(value) is RTCRtpCodecParameters:
            return dataclasses.replace(
                value, rtcpFeedback=list(value.rtcpFeedback), parameters=dict(value.parameters)
            )
        return copy.deepcopy(value)


class _CandidateCopy:
    """Stands in for `copy` inside aioice.ice, which shallow-copies every remote candidate
    (2 % of a set-up through copy's generic machinery); a candidate is a plain object."""

    @staticmethod
    def copy(value: Any) -> Any:
        if type(value) is aioice.Candidate:
            clone = object.__new__(aioice.Candidate)
            clone.__dict__.update(value.__dict__)
            return clone
        return copy.copy(value)


_installed = False


def install() -> None:
    """Apply the process-wide aiortc and aioice patches (the shared DTLS certificate and the
    cheaper copies); idempotent.

    Called at start-up (the CLI, `Gateway.start`, test fixtures), never at import, so
    that importing gateway modules (the configuration, a tool, a test) leaves aiortc as
    it is until a gateway actually runs.
    """
    global _installed
    if _installed:
        return
    _installed = True
    RTCCertificate.generateCertificate = classmethod(  # type: ignore[method-assign,assignment]
        lambda cls: _shared_certificate.get()
    )
    aiortc.rtcpeerconnection.copy = _CodecCopy  # type: ignore[attr-defined,assignment]
    aioice.ice.copy = _CandidateCopy  # type: ignore[attr-defined,assignment]
    RTCPeerConnection._RTCPeerConnection__connect = _guarded_connect(  # type: ignore[attr-defined]
        RTCPeerConnection._RTCPeerConnection__connect  # type: ignore[attr-defined]
    )


def _guarded_connect(connect: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """aiortc starts ICE and DTLS in a task nobody awaits, which assumes every transceiver
    has a transport and every description a fingerprint; a hostile page's SDP with a
    rejected or extra section broke that assumption ("Task exception was never
    retrieved", found by the WebSocket fuzz). Such a connection now fails the way a failed
    ICE check does, so the call ends with 408 instead of waiting and logging a traceback."""

    async def guarded(pc: Any) -> None:
        try:
            await connect(pc)
        except (AttributeError, AssertionError, KeyError, ValueError) as exc:
            log.info("browser media cannot start: %s: %s", type(exc).__name__, exc)
            if pc.connectionState not in ("closed", "failed"):
                pc._RTCPeerConnection__connectionState = "failed"
                pc.emit("connectionstatechange")

    return guarded


def installed() -> bool:
    return _installed


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _ice_addresses is None:
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in _ice_addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


class DormantTrack(MediaStreamTrack):
    """A track that never yields: it keeps the sender negotiated (SSRC, sendrecv) while the
    tap sends the packets, and costs nothing while it waits."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> Any:
        await self._stopped
        raise MediaStreamError

    def stop(self) -> None:
        if not self._stopped.done():
            self._stopped.set_result(None)
        super().stop()


def prefer_codecs(transceiver: Any, names: Sequence[str]) -> None:
    """Offer only these codecs (by name, in order) on an aiortc transceiver we offer from."""
    wanted = _capabilities_named(tuple(names))
    if wanted:
        # setCodecPreferences() rebuilds aiortc's capability list to check ours against it:
        # 6 % of an inbound call's set-up. Ours are taken from that list, so valid as is.
        transceiver._preferred_codecs = list(wanted)


@functools.lru_cache(maxsize=64)
def _capabilities_named(names: tuple[str, ...]) -> tuple[Any, ...]:
    capabilities = RTCRtpSender.getCapabilities("audio").codecs
    wanted = [
        c for name in names for c in capabilities if c.mimeType.lower() == f"audio/{name.lower()}"
    ]
    unique: list[Any] = []
    for codec in wanted:  # in order, once each, as setCodecPreferences keeps them
        if codec not in unique:
            unique.append(codec)
    return tuple(unique)


def _without_decoder_thread(receiver: Any) -> None:
    """aiortc starts a decoder thread per receiver; the tap never feeds it, and a thread
    per call costs memory and a thread start per call setup. Keep only the RTCP task."""

    async def receive(parameters: Any) -> None:
        if receiver._RTCRtpReceiver__started:
            return
        receiver._RTCRtpReceiver__transport._register_rtp_receiver(receiver, parameters)
        receiver._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(receiver._run_rtcp())
        receiver._RTCRtpReceiver__started = True

    receiver.receive = receive


class MediaTap:
    """RTP in and out of one transceiver, beside aiortc's own RTP machinery."""

    def __init__(self, transceiver: RTCRtpTransceiver, sink: PacketSink) -> None:
        self._sender = transceiver.sender
        _without_decoder_thread(transceiver.receiver)
        self._sink = sink
        self._sequence = secrets.randbits(16)
        self._installed: Any = None
        self._pending: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.dropped = 0
        self.fast_received = 0

    def install(self) -> None:
        """Take over the DTLS transport's RTP delivery (once it exists: after the SDP)."""
        dtls = self._sender.transport
        if dtls is None or self._installed is dtls:
            return
        deliver = self._deliver

        async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
            deliver(data)

        dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
        self._installed = dtls
        self._shortcut_ice(dtls)

    def _deliver(self, data: bytes) -> None:
        """One decrypted RTP packet to the sink (from either path into the tap)."""
        try:
            h = rtp.parse(data)
        except rtp.RtpError:
            return
        try:
            self._sink(h.payload_type, h.sequence, h.timestamp, h.marker, h.payload)
        except Exception:
            log.exception("browser packet handler failed")

    def _shortcut_ice(self, dtls: Any) -> None:
        """Decrypt and deliver SRTP where the datagram arrives, in the socket callback.

        aioice tries to parse every datagram as STUN (an exception per media packet), then
        queues it for the DTLS transport's reader task; here SRTP skips both. STUN always
        starts with two zero bits (RFC 8489 section 5) and RTP/RTCP with 0b10 (RFC 7983),
        so the first byte tells them apart. RTCP, DTLS and STUN keep aiortc's path.
        """
        connection = dtls.transport._connection
        queue_data = connection.data_received
        deliver = self._deliver

        def data_received(data: bytes, component: int) -> None:
            srtp = dtls._rx_srtp
            if srtp is None or not 127 < data[0] < 192 or rtp.is_rtcp(data):
                queue_data(data, component)
                return
            try:
                plain = srtp.unprotect(data)
            except pylibsrtp.Error:
                return
            self.fast_received += 1
            deliver(plain)

        connection.data_received = data_received
        for protocol in connection._protocols:
            if type(protocol) is aioice.ice.StunProtocol:
                stun_received = protocol.datagram_received

                def datagram_received(
                    data: bytes | str, addr: tuple[Any, ...], _stun: Any = stun_received
                ) -> None:
                    if isinstance(data, bytes) and data and 127 < data[0] < 192:
                        data_received(data, 1)
                    else:
                        _stun(data, addr)

                protocol.datagram_received = datagram_received  # type: ignore[method-assign]

    def send(self, payload_type: int, timestamp: int, marker: bool, payload: bytes) -> bool:
        """Protect and send one packet; False while DTLS or ICE is not up yet."""
        dtls = self._sender.transport
        srtp = getattr(dtls, "_tx_srtp", None)
        if srtp is None or dtls.state != "connected":
            self.dropped += 1
            return False
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            self.dropped += 1
            return False
        self._sequence = (self._sequence + 1) & 0xFFFF
        packet = rtp.build(
            payload_type, self._sequence, timestamp, self._sender._ssrc, payload, marker
        )
        data = srtp.protect(packet)
        protocol = pair.protocol
        if type(protocol) is aioice.ice.StunProtocol:
            protocol.transport.sendto(data, pair.remote_addr)
        else:
            # A TURN relay: its send_data may have to wait for a channel binding.
            task = asyncio.ensure_future(protocol.send_data(data, pair.remote_addr))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        self.sent += 1
        return True

    def close(self) -> None:
        for task in self._pending:
            task.cancel()
        # aiortc or aioice may keep their objects (and so these callbacks) a while after
        # the call; without the sink they no longer keep the call alive with them.
        self._sink = _no_sink


def _no_sink(payload_type: int, sequence: int, timestamp: int, marker: bool, data: bytes) -> None:
    """Where packets go once the tap is closed."""


def stop_leftover_ice(pc: Any) -> None:
    """Cancel aioice's consent-freshness task if it outlived the peer connection's close.

    aioice starts it when connect() completes, even when close() ran meanwhile (a call
    hung up while ICE was finishing); it then runs until six consent checks fail (~30 s),
    keeping the connection and everything it references alive and sending STUN."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        connection = getattr(getattr(dtls, "transport", None), "_connection", None)
        task = getattr(connection, "_query_consent_task", None)
        if task is not None and not task.done():
            task.cancel()
