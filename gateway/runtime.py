"""Running one gateway process: its event loop, its web server, its logging.

Used by both `sipgw run` (gateway/cli.py, a single process) and each worker process of
`--workers N` (gateway/workers.py), so neither has to import the other.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from gateway.cluster import WorkerSpec
from gateway.config import Config
from gateway.service import Gateway
from gateway.web.app import create_app

log = logging.getLogger("sipgw")


Report = Callable[[int, int], None]


async def serve(
    config: Config, worker: WorkerSpec | None = None, report: Report | None = None
) -> None:
    gateway = Gateway(config, worker)
    app = create_app(config, gateway)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    # Workers share the page's port; the kernel spreads new connections over them.
    site = web.TCPSite(runner, config.host, config.http_port, reuse_port=worker is not None)
    await site.start()
    # Everything made so far (aiortc, PyAV, numpy and the gateway itself: ~70,000 objects)
    # lives as long as the process; out of the collector's sight, a full collection no
    # longer walks them (22 ms each, several a second at 200 call set-ups a second).
    gc.freeze()
    # A call set-up allocates thousands of objects; at the default 700 the young
    # generation was collected several times per call (docs/benchmarks.md).
    gc.set_threshold(20_000, 20, 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if report is not None:
        report(gateway.sip_port, gateway.ua.transport.tls_port)
    else:
        where = describe(config, [gateway.sip_port])
        print(f"sipgw ready: open {url(config)}  ({where})", flush=True)
    await stop.wait()
    log.info("shutting down: ending calls")
    await runner.cleanup()


def url(config: Config) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{config.http_port}/"


def describe(config: Config, sip_ports: list[int]) -> str:
    sip = f"SIP on {config.sip_bind}:{sip_ports[0]}"
    if len(sip_ports) > 1:
        others = ", ".join(str(p) for p in sip_ports[1:])
        sip += f"; {len(sip_ports)} workers, the others on {others}"
    where = (
        f"trunk {config.trunk.uri}"
        if config.trunk
        else (
            f"demo endpoint: dial {config.demo_echo_extension} (echo) or "
            f"{config.demo_tone_extension} (tone)"
        )
    )
    return f"{sip}, {where}"


def run_serve(
    config: Config, worker: WorkerSpec | None = None, report: Report | None = None
) -> int:
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config, worker, report))
    except OSError as exc:
        print(f"sipgw: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: UDP receive+send costs 3-4 us there against 11-20 us on the
    stock loop (measured here), and a gateway moves 100 datagrams a second per call."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def configure_logging(verbosity: int, tag: str | None = None) -> None:
    level = logging.DEBUG if verbosity else logging.INFO
    name = f"{tag} %(name)s" if tag else "%(name)s"
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s {name}: %(message)s")
    if verbosity < 2:
        # Whole SIP messages at DEBUG drown everything else; -vv asks for them.
        logging.getLogger("gateway.sip.transport").setLevel(logging.INFO)
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
