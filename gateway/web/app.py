"""The aiohttp application: softphone page, /ws signalling, /healthz and /metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.config import Config
from gateway.service import Gateway
from gateway.signaling.session import Session

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
GATEWAY = web.AppKey("gateway", Gateway)
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
MAX_WS_MESSAGE = 512 * 1024


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(request.app[GATEWAY].health())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format, so an existing scraper can watch the gateway."""
    health = request.app[GATEWAY].health()
    lines = [
        "# TYPE sipgw_sessions gauge",
        f"sipgw_sessions {health['sessions']}",
        "# TYPE sipgw_calls_active gauge",
        f"sipgw_calls_active {health['calls']['active']}",
        "# TYPE sipgw_calls_total counter",
        f"sipgw_calls_total {health['calls']['total']}",
        "# TYPE sipgw_rtp_ports_in_use gauge",
        f"sipgw_rtp_ports_in_use {health['rtp_ports_in_use']}",
        "# TYPE sipgw_rtp_dropped_packets_total counter",
        *(
            f'sipgw_rtp_dropped_packets_total{{reason="{reason}"}} {count}'
            for reason, count in health["rtp_dropped_packets"].items()
        ),
        "# TYPE sipgw_sip_transactions gauge",
        f"sipgw_sip_transactions {health['sip_transactions']}",
        "# TYPE sipgw_setup_ms summary",
    ]
    # The gateway's own share of recent call set-ups (gateway/calls/timing.py).
    for name, stats in health["setup_ms"].items():
        lines.append(f'sipgw_setup_ms{{interval="{name}",quantile="0.5"}} {stats["p50_ms"]}')
        lines.append(f'sipgw_setup_ms{{interval="{name}",quantile="0.99"}} {stats["p99_ms"]}')
        lines.append(f'sipgw_setup_ms_count{{interval="{name}"}} {stats["count"]}')
    lines += request.app[GATEWAY].security.metrics_lines()
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    # No permessage-deflate: the messages are a few kB of SDP at call set-up, and zlib per
    # message costs the gateway CPU at every call to save the browser bandwidth it has.
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_WS_MESSAGE, compress=False)
    await ws.prepare(request)
    gateway = request.app[GATEWAY]
    session = Session(gateway, ws.send_json, peer=str(request.remote))
    gateway.sessions.add(session)
    request.app[SOCKETS].add(ws)
    log.info("session %s opened from %s", session.id, request.remote)
    try:
        # Only this handler reads the socket (aiohttp's rule); the session has one writer.
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await session.on_text(msg.data)
            elif msg.type is WSMsgType.ERROR:
                log.info("session %s: socket error %s", session.id, ws.exception())
    finally:
        gateway.detach(session)
        request.app[SOCKETS].discard(ws)
        await session.close()
        log.info("session %s closed", session.id)
    return ws


def create_app(config: Config, gateway: Gateway | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_WS_MESSAGE)
    app[GATEWAY] = gateway or Gateway(config)
    app[SOCKETS] = set()
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_static("/static/", STATIC)

    async def services(app: web.Application) -> AsyncIterator[None]:
        await app[GATEWAY].start()
        yield
        await app[GATEWAY].stop()

    async def close_sockets(app: web.Application) -> None:
        # Calls first, so each page hears why its call ended before its socket closes.
        await app[GATEWAY].end_calls("Gateway shutting down")
        sockets: set[web.WebSocketResponse] = app[SOCKETS]
        for ws in list(sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    app.cleanup_ctx.append(services)
    app.on_shutdown.append(close_sockets)
    return app
