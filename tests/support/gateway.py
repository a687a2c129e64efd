"""Start the whole gateway (web, signalling, SIP, media, demo) in-process on free ports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from gateway.config import Config
from gateway.service import Gateway
from gateway.web.app import create_app

# Small T1 keeps Timer B/F (64 * T1) at 3.2 s, so time-out tests stay short.
TEST_T1 = 0.05


@dataclass
class RunningGateway:
    gateway: Gateway
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/ws"


def gateway_config(**changes: Any) -> Config:
    base = Config(
        host="127.0.0.1",
        http_port=0,
        sip_port=0,
        sip_t1=TEST_T1,
        ice_addresses=("127.0.0.1",),
        no_answer_timeout=30.0,
    )
    return replace(base, **changes)


@contextlib.asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[RunningGateway]:
    gateway = Gateway(config)
    runner = web.AppRunner(create_app(config, gateway), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield RunningGateway(gateway, port)
    finally:
        await runner.cleanup()
