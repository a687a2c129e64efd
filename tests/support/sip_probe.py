"""A hand-made SIP client on a raw UDP socket, bound to any loopback address (the whole of
127.0.0.0/8 is local on Linux), to play an attacker or a trusted peer in tests."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

SDP_BODY = (
    "v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@dataclass
class Reply:
    status: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def code(self) -> int:
        return int(self.status.split()[1])

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @classmethod
    def parse(cls, data: bytes) -> Reply:
        head = data.decode(errors="replace").split("\r\n\r\n", 1)[0]
        status, *lines = head.split("\r\n")
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
        return cls(status, headers)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        pass


class SipProbe:
    """Sends requests from (host, any port) to the gateway and reads what comes back."""

    def __init__(self, host: str, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.host = host
        self.target = (target_host, target_port)
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self._transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def __aenter__(self) -> SipProbe:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self.replies), local_addr=(self.host, 0)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            self._transport.close()

    def request(self, method: str, user: str, *, call_id: str | None = None) -> tuple[str, str]:
        """Send one out-of-dialog request; returns (Call-ID, branch)."""
        call_id = call_id or f"{secrets.token_hex(8)}@{self.host}"
        branch = "z9hG4bK" + secrets.token_hex(8)
        body = SDP_BODY.format(host=self.host) if method == "INVITE" else ""
        self._send(method, user, call_id, branch, 1, body)
        return call_id, branch

    def ack(self, user: str, call_id: str, branch: str, to_tag: str) -> None:
        """The ACK of a non-2xx final response (same branch: it ends the server transaction)."""
        self._send("ACK", user, call_id, branch, 1, "", to_tag=to_tag)

    def _send(
        self,
        method: str,
        user: str,
        call_id: str,
        branch: str,
        cseq: int,
        body: str,
        to_tag: str | None = None,
    ) -> None:
        assert self._transport is not None
        host, port = self.target
        to_suffix = f";tag={to_tag}" if to_tag else ""
        lines = [
            f"{method} sip:{user}@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:scanner@{self.host}>;tag=probe{call_id[:6]}",
            f"To: <sip:{user}@{host}>{to_suffix}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:scanner@{self.host}:{self.port}>",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self._transport.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), self.target)

    async def final(self, call_id: str, timeout: float = 5.0) -> Reply:
        """The first final response for `call_id` (provisionals and others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                reply = Reply.parse(await self.replies.get())
                if reply.header("Call-ID") == call_id and reply.code >= 200:
                    return reply

    async def invite(self, user: str) -> Reply:
        """INVITE and the final answer; the ACK is sent for a non-2xx."""
        call_id, branch = self.request("INVITE", user)
        reply = await self.final(call_id)
        to = reply.header("To") or ""
        if reply.code >= 300 and ";tag=" in to:
            self.ack(user, call_id, branch, to.split(";tag=", 1)[1].split(";")[0])
        return reply
