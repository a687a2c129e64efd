"""The gateway's services in one process: SIP user agent, RTP ports, demo endpoint, calls."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

from sipmessage import URI

from gateway.calls.call import Call, Notify, Route
from gateway.config import Config
from gateway.demo.endpoint import DemoEndpoint
from gateway.media import aiortc_seam
from gateway.media.ports import PortAllocator
from gateway.sip.transaction import Timers
from gateway.sip.transport import Peer, TransportKind
from gateway.sip.ua import UserAgent

if TYPE_CHECKING:
    from gateway.signaling.session import Session

log = logging.getLogger(__name__)

_DIALABLE = re.compile(r"^\+?[0-9A-Za-z*#._-]{1,64}$")
_SEPARATORS = re.compile(r"[\s()/-]")


def normalise_number(text: str) -> str:
    """What a person types -> a SIP user part: separators go, the rest must be dialable."""
    number = _SEPARATORS.sub("", text.strip())
    if not _DIALABLE.match(number):
        raise ValueError(f"{text[:40]!r} is not a number or extension that can be dialled")
    return number


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.timers = Timers(t1=config.sip_t1)
        self.ports = PortAllocator(config.rtp_port_min, config.rtp_port_max)
        self.ua = UserAgent(
            config.sip_bind,
            config.sip_port,
            timers=self.timers,
            kinds=config.sip_transports,
            advertised_host=config.advertised_address,
        )
        self.demo: DemoEndpoint | None = None
        if config.demo_mode:
            self.demo = DemoEndpoint(
                "127.0.0.1",
                self.ports,
                echo_extension=config.demo_echo_extension,
                tone_extension=config.demo_tone_extension,
                tone_frequency=config.demo_tone_frequency,
                timers=self.timers,
            )
        self.sessions: set[Session] = set()
        self.calls_total = 0

    async def start(self) -> None:
        aiortc_seam.configure_ice_addresses(self.config.effective_ice_addresses())
        await self.ua.start()
        if self.demo is not None:
            await self.demo.start()

    async def end_calls(self, reason: str) -> None:
        await asyncio.gather(
            *(session.end_calls(reason) for session in list(self.sessions)),
            return_exceptions=True,
        )

    async def stop(self) -> None:
        for session in list(self.sessions):
            await session.close()
        if self.demo is not None:
            await self.demo.close()
        await self.ua.close()

    @property
    def sip_port(self) -> int:
        return self.ua.port

    def route(self, to: str) -> Route:
        if to.startswith(("sip:", "sips:")):
            raise ValueError("dial a number or extension; SIP URIs are not routed yet")
        number = normalise_number(to)
        trunk = self.config.trunk
        if trunk is not None:
            target = URI(
                scheme="sip",
                user=number,
                host=trunk.uri.host,
                port=trunk.uri.port,
                parameters=trunk.uri.parameters,
            )
            return Route(target=target, peer=trunk.peer, trunk=trunk)
        assert self.demo is not None
        target = URI(scheme="sip", user=number, host="127.0.0.1", port=self.demo.port)
        return Route(
            target=target, peer=Peer(TransportKind.UDP, "127.0.0.1", self.demo.port), trunk=None
        )

    def new_call(self, call_id: str, to: str, offer: str, route: Route, notify: Notify) -> Call:
        self.calls_total += 1
        return Call(
            call_id,
            to=to,
            offer=offer,
            route=route,
            ua=self.ua,
            config=self.config,
            ports=self.ports,
            notify=notify,
        )

    def browser_ice_servers(self) -> list[dict[str, Any]]:
        servers: list[dict[str, Any]] = []
        for server in self.config.ice_servers:
            entry: dict[str, Any] = {"urls": list(server.urls)}
            if server.username is not None:
                entry["username"] = server.username
                entry["credential"] = server.credential
            servers.append(entry)
        return servers

    def demo_info(self) -> dict[str, str] | None:
        if self.demo is None:
            return None
        return {"echo": self.demo.echo_extension, "tone": self.demo.tone_extension}

    def health(self) -> dict[str, Any]:
        active = sum(len(s.calls) for s in self.sessions)
        return {
            "status": "ok",
            "sip": {
                "port": self.sip_port,
                "transports": [k.value for k in self.ua.transport.kinds],
            },
            "trunk": str(self.config.trunk.uri) if self.config.trunk else None,
            "demo": self.demo_info(),
            "sessions": len(self.sessions),
            "calls": {"active": active, "total": self.calls_total},
            "rtp_ports_in_use": self.ports.in_use,
            "sip_transactions": self.ua.tl.active,
        }
