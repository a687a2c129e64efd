"""`sipgw run --workers 2`: two gateway processes behind one HTTP port act as one gateway.

The kernel hands each page's WebSocket to either worker; these tests open pages until they
have one where they need it (welcome's `worker`), then check what must not depend on where
a page landed: calls out from either worker, an inbound call to the public SIP port for a
page on the other worker, a page-to-page call across workers, and the supervisor stopping
everything when one worker dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from gateway.cluster import WorkerSpec
from gateway.config import Config, ConfigError, User, validate
from gateway.media import aiortc_seam
from gateway.service import Gateway
from gateway.workers import worker_config
from tests.support.sipgw_process import SipgwProcess, sipgw_run
from tests.support.sipp import SippUac, sipp_available
from tests.support.webrtc_client import WebRtcClient

CONFIG = """
[[users]]
name = "alice"
extension = "1001"

[[users]]
name = "bob"
extension = "1002"
"""

needs_sipp = pytest.mark.skipif(not sipp_available(), reason="sipp not installed (sip-tester)")


@contextlib.asynccontextmanager
async def two_workers(tmp_path: Path) -> AsyncIterator[SipgwProcess]:
    config = tmp_path / "sipgw.toml"
    config.write_text(CONFIG)
    # The gateway runs in other processes, so nothing in this one has told aioice to
    # gather loopback candidates for the test's own pages (it never does by itself); in a
    # network namespace with only `lo` they would have none, and no audio would flow.
    aiortc_seam.configure_ice_addresses(["127.0.0.1"])
    async with sipgw_run(["--workers", "2", "--config", str(config)], timeout=60) as process:
        yield process


def ws_url(process: SipgwProcess) -> str:
    return process.url.replace("http://", "ws://") + "ws"


def public_sip_port(process: SipgwProcess) -> int:
    match = re.search(r"SIP on [\d.]+:(\d+)", process.log())
    assert match, process.log()
    return int(match.group(1))


async def page_on(
    process: SipgwProcess, worker: int, stack: AsyncExitStack, *, user: str, tone: float = 1000
) -> WebRtcClient:
    """A page of `user` whose WebSocket the kernel gave to `worker`; pages that landed on
    the other worker are closed again."""
    for _ in range(40):
        client = WebRtcClient(ws_url(process), user=user, tone=tone)
        await client.__aenter__()
        if client.welcome.get("worker") == worker:
            stack.push_async_callback(client.__aexit__, None, None, None)
            return client
        await client.__aexit__(None, None, None)
    raise AssertionError(f"no connection landed on worker {worker} in 40 tries")


async def test_pages_on_either_worker_call_the_demo_echo(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as process, AsyncExitStack() as stack:
        first = await page_on(process, 0, stack, user="alice", tone=1000)
        second = await page_on(process, 1, stack, user="bob", tone=700)
        ids = [await first.call("600"), await second.call("600")]
        for page in (first, second):
            await page.accept_answer(await page.expect("answer"))
        assert abs(await first.wait_for_tone(1000) - 1000) < 20
        assert abs(await second.wait_for_tone(700) - 700) < 20
        seen: dict[int, int] = {}
        # A new connection each time, for the kernel to hand to either worker.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(30):
                async with http.get(process.url + "healthz") as response:
                    health = json.loads(await response.text())
                seen[health["worker"]["index"]] = health["calls"]["active"]
                if len(seen) == 2:
                    break
        assert seen == {0: 1, 1: 1}, seen  # each call is carried by its page's worker
        for page, call_id in zip((first, second), ids, strict=True):
            await page.send({"type": "hangup", "id": call_id})
            assert (await page.expect("hangup"))["by"] == "local"


@needs_sipp
async def test_inbound_call_rings_a_page_on_the_other_worker(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as process, AsyncExitStack() as stack:
        page = await page_on(process, 1, stack, user="alice")
        target = f"127.0.0.1:{public_sip_port(process)}"  # worker 0's port
        async with SippUac("uac_inbound_call", target=target, service="1001", rtp_echo=True) as uac:
            incoming = await page.expect("incoming")
            assert incoming["from"] == "2000"
            await page.answer_incoming(incoming)
            assert await page.expect("answer") == {"type": "answer", "id": incoming["id"]}
            heard = await page.wait_for_tone(1000)
            assert abs(heard - 1000) < 20, f"heard {heard:.0f} Hz"
            hangup = await page.expect("hangup", timeout=10)
            assert (hangup["id"], hangup["by"]) == (incoming["id"], "remote")
            assert await uac.wait(timeout=10) == 0, uac.summary()
        # The 200 came from worker 0, which owns the dialog and its media.
        (ok,) = uac.received("SIP/2.0 200 OK")[:1]
        assert f"Contact: <sip:1001@{target}" in ok or f"@{target}>" in ok, ok


@needs_sipp
async def test_pages_on_both_workers_ring_and_a_reject_ends_both(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as process, AsyncExitStack() as stack:
        here = await page_on(process, 0, stack, user="alice")
        there = await page_on(process, 1, stack, user="alice")
        target = f"127.0.0.1:{public_sip_port(process)}"
        async with SippUac("uac_inbound_rejected", target=target, service="1001") as uac:
            rang = [await here.expect("incoming"), await there.expect("incoming")]
            assert rang[0]["id"] == rang[1]["id"]
            await here.reject(rang[0], 603)
            # The page on the other worker hears the end through the relay.
            hangup = await there.expect("hangup")
            assert (hangup["id"], hangup["code"]) == (rang[0]["id"], 603)
            assert await uac.wait(timeout=10) == 0, uac.summary()
        assert uac.received("SIP/2.0 603"), uac.messages()


@needs_sipp
async def test_the_only_page_leaving_from_the_other_worker_ends_the_call(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as process:
        inner = AsyncExitStack()
        there = await page_on(process, 1, inner, user="alice")
        target = f"127.0.0.1:{public_sip_port(process)}"
        async with SippUac("uac_inbound_rejected", target=target, service="1001") as uac:
            await there.expect("incoming")
            await inner.aclose()  # worker 1 withdraws the page; worker 0 owns the call
            # Well before the 30 s ring timeout, which would also end in 480.
            assert await uac.wait(timeout=10) == 0, uac.summary()
        assert uac.received("SIP/2.0 480"), uac.messages()


async def test_browser_to_browser_call_across_workers(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as process, AsyncExitStack() as stack:
        alice = await page_on(process, 0, stack, user="alice", tone=1000)
        bob = await page_on(process, 1, stack, user="bob", tone=600)
        call_id = await alice.call("1002")
        incoming = await bob.expect("incoming")
        assert (incoming["id"], incoming["from"]) == (call_id, "1001")
        await bob.answer_incoming(incoming)
        await alice.accept_answer(await alice.expect("answer"))
        assert abs(await alice.wait_for_tone(600) - 600) < 20
        assert abs(await bob.wait_for_tone(1000) - 1000) < 20
        await bob.send({"type": "hangup", "id": call_id})  # forwarded to alice's worker
        assert (await alice.expect("hangup"))["by"] == "remote"


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes, from /proc (no procps needed)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the ")".
            fields = stat.read_text().rpartition(")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
            # Not multiprocessing's resource tracker, also a child: workers run spawn_main.
            if int(fields[1]) == supervisor and b"spawn_main" in cmdline:
                pids.append(int(stat.parent.name))
    return pids


async def test_a_dead_worker_stops_the_gateway(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as process:
        workers = await asyncio.to_thread(worker_pids, process.process.pid)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)
        code = await asyncio.wait_for(process.process.wait(), 30)
        assert code == 1, process.log()
        assert "stopping the others" in process.log()
        for pid in workers:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_worker_config_splits_ports_without_overlap() -> None:
    config = Config(sip_port=5060, rtp_port_min=20000, rtp_port_max=30000, workers=3)
    parts = [worker_config(config, i, 3) for i in range(3)]
    assert [p.sip_port for p in parts] == [5060, 5062, 5064]  # TLS on each + 1
    assert parts[0].rtp_port_min == 20000 and parts[-1].rtp_port_max == 30000
    for low, high in itertools.pairwise(parts):
        assert low.rtp_port_max < high.rtp_port_min
    assert worker_config(replace(config, sip_port=0), 2, 3).sip_port == 0
    with pytest.raises(ConfigError, match="RTP ports"):
        worker_config(replace(config, rtp_port_min=29990), 0, 3)
    with pytest.raises(ConfigError, match="http_port"):
        validate(replace(config, http_port=0))


async def test_bad_worker_messages_are_dropped_and_the_relay_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = Gateway(Config(sip_port=0, users=(User(name="alice"),)), WorkerSpec(0, 2, tmp_path))
    assert gateway.cluster is not None
    await gateway.cluster.start()
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = str(tmp_path / "worker-0.sock")
        for junk in (b"\xff\x00", b"[1]", b'{"op": "session"}', b'{"op": "?", "from": 1}'):
            sock.sendto(junk, path)
        good = {"op": "session", "session": "s1", "user": "alice", "from": 1}
        sock.sendto(json.dumps(good).encode(), path)
        sock.close()
        async with asyncio.timeout(5):
            while "s1" not in gateway.cluster.remote:
                await asyncio.sleep(0.01)
        (ringable,) = gateway.sessions_of(User(name="alice"))
        assert ringable.id == "s1" and ringable.user == User(name="alice")
        # Dropped with a line saying why, never a traceback (gateway/cluster/ops.py).
        dropped = [r for r in caplog.records if "worker message dropped" in r.getMessage()]
        assert dropped and not any(r.exc_info for r in caplog.records)
    finally:
        await gateway.cluster.close()
