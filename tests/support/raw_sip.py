"""A bare SIP caller over UDP for race tests: INVITE, then CANCEL at a chosen moment.

sipp paces itself in milliseconds and cannot put a CANCEL in the same instant as its
INVITE; this sends both from one socket with no delay at all when asked, reads the
responses, and ACKs the INVITE's final non-2xx answer so its transaction ends at once.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field


@dataclass
class RawCall:
    branch: str = field(default_factory=lambda: "z9hG4bK-" + secrets.token_hex(8))
    call_id: str = field(default_factory=lambda: secrets.token_hex(12) + "@raw")
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    responses: list[str] = field(default_factory=list)
    final: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, caller: RawSipCaller) -> None:
        self.caller = caller

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.caller._on_response(data.decode(errors="replace"))


class RawSipCaller:
    """One UDP socket placing INVITEs (with an SDP offer) to `user` at the gateway."""

    def __init__(self, gateway_port: int, user: str, *, host: str = "127.0.0.1") -> None:
        self.gateway = (host, gateway_port)
        self.user = user
        self.host = host
        self.port = 0
        self.calls: dict[str, RawCall] = {}
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> RawSipCaller:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, 0)
        )
        self.port = int(self._transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            self._transport.close()

    def _headers(self, call: RawCall, method: str, to_tag: str = "") -> list[str]:
        uri = f"sip:{self.user}@{self.gateway[0]}:{self.gateway[1]}"
        return [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={call.branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:2000@{self.host}:{self.port}>;tag={call.tag}",
            f"To: <{uri}>{';tag=' + to_tag if to_tag else ''}",
            f"Call-ID: {call.call_id}",
            f"CSeq: 1 {method}",
        ]

    def _send(self, lines: list[str], body: str = "") -> None:
        assert self._transport is not None
        lines = [*lines, f"Content-Length: {len(body.encode())}", "", body]
        self._transport.sendto("\r\n".join(lines).encode(), self.gateway)

    def invite(self, media_port: int = 40998) -> RawCall:
        call = RawCall()
        self.calls[call.call_id] = call
        body = (
            "v=0\r\n"
            f"o=- 1 1 IN IP4 {self.host}\r\n"
            "s=-\r\n"
            f"c=IN IP4 {self.host}\r\n"
            "t=0 0\r\n"
            f"m=audio {media_port} RTP/AVP 0\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
        )
        headers = self._headers(call, "INVITE")
        headers += [
            f"Contact: <sip:2000@{self.host}:{self.port}>",
            "Content-Type: application/sdp",
        ]
        self._send(headers, body)
        return call

    def cancel(self, call: RawCall) -> None:
        self._send(self._headers(call, "CANCEL"))

    def _on_response(self, text: str) -> None:
        head = text.split("\r\n", 1)[0]
        call_id = _header(text, "Call-ID")
        call = self.calls.get(call_id or "")
        if call is None or not head.startswith("SIP/2.0 "):
            return
        call.responses.append(head)
        code = int(head.split()[1])
        if "INVITE" not in (_header(text, "CSeq") or "") or code < 200:
            return
        if code >= 300:
            to = _header(text, "To") or ""
            to_tag = to.split(";tag=", 1)[1].split(";")[0] if ";tag=" in to else ""
            self._send(self._headers(call, "ACK", to_tag))
        if not call.final.done():
            call.final.set_result(code)


def _header(text: str, name: str) -> str | None:
    for line in text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None
