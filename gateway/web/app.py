"""The aiohttp application: softphone page, /ws signalling, /healthz and /metrics."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from gateway.config import Config
from gateway.security import SecurityEvent
from gateway.service import Gateway
from gateway.signaling.session import Session
from gateway.signin.origins import host_is_loopback, origin_allowed
from gateway.signin.proxies import client_address

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
GATEWAY = web.AppKey("gateway", Gateway)
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
# Open WebSockets per remote address, for server.max_sockets_per_address.
PER_ADDRESS: web.AppKey[Counter[str]] = web.AppKey("per_address")
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
        "# TYPE sipgw_sip_bad_messages_total counter",
        f"sipgw_sip_bad_messages_total {request.app[GATEWAY].ua.transport.bad_messages}",
        "# TYPE sipgw_setup_ms summary",
    ]
    # The gateway's own share of recent call set-ups (gateway/calls/timing.py).
    for name, stats in health["setup_ms"].items():
        lines.append(f'sipgw_setup_ms{{interval="{name}",quantile="0.5"}} {stats["p50_ms"]}')
        lines.append(f'sipgw_setup_ms{{interval="{name}",quantile="0.99"}} {stats["p99_ms"]}')
        lines.append(f'sipgw_setup_ms_count{{interval="{name}"}} {stats["count"]}')
    pike = request.app[GATEWAY].sip_guard.pike
    lines += [
        # The per-source SIP rate limit (gateway/sip/guard.py).
        "# TYPE sipgw_sip_rate_limit_blocks_total counter",
        f"sipgw_sip_rate_limit_blocks_total {pike.blocks}",
        "# TYPE sipgw_sip_rate_limit_dropped_total counter",
        f"sipgw_sip_rate_limit_dropped_total {pike.dropped}",
        "# TYPE sipgw_sip_rate_limit_blocked gauge",
        f"sipgw_sip_rate_limit_blocked {pike.blocked}",
        "# TYPE sipgw_sip_rate_limit_sources gauge",
        f"sipgw_sip_rate_limit_sources {pike.sources}",
        "# TYPE sipgw_sip_untrusted_refused_total counter",
        f"sipgw_sip_untrusted_refused_total {request.app[GATEWAY].sip_guard.refused}",
    ]
    lines += request.app[GATEWAY].security.metrics_lines()
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def _client(request: web.Request) -> str:
    """The page's address, as a trusted reverse proxy reports it (signin/proxies.py)."""
    proxies = request.app[GATEWAY].config.signin.trusted_proxies
    return client_address(request.remote, request.headers.get("X-Forwarded-For"), proxies)


def _refusal(request: web.Request) -> web.Response | None:
    """The upgrade's guards: the page's Origin, and the sockets its address holds."""
    gateway = request.app[GATEWAY]
    settings = gateway.config.signin
    src = _client(request)
    origin = request.headers.get("Origin")
    on_loopback = host_is_loopback(gateway.config.host)
    if not origin_allowed(
        origin, request.host, settings.allowed_origins, gateway_on_loopback=on_loopback
    ):
        gateway.security.record(SecurityEvent.ORIGIN_REFUSED, src, detail=origin)
        return web.Response(status=403, text="origin not allowed\n")
    limit = settings.max_sockets_per_address
    if limit and request.app[PER_ADDRESS][src] >= limit:
        gateway.security.record(SecurityEvent.SOCKET_LIMIT, src, detail=f"{limit} open")
        return web.Response(status=429, text="too many connections from this address\n")
    return None


async def websocket(request: web.Request) -> web.StreamResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    src = _client(request)
    per_address = request.app[PER_ADDRESS]
    per_address[src] += 1
    try:
        return await _serve_socket(request)
    finally:
        per_address[src] -= 1
        if per_address[src] <= 0:
            del per_address[src]


async def _serve_socket(request: web.Request) -> web.WebSocketResponse:
    # No permessage-deflate: the messages are a few kB of SDP at call set-up, and zlib per
    # message costs the gateway CPU at every call to save the browser bandwidth it has.
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_WS_MESSAGE, compress=False)
    await ws.prepare(request)
    gateway = request.app[GATEWAY]
    client = _client(request)
    session = Session(gateway, ws.send_json, peer=client)
    gateway.sessions.add(session)
    request.app[SOCKETS].add(ws)
    log.info("session %s opened from %s", session.id, client)
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
    app[PER_ADDRESS] = Counter()
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
