"""The files under examples/ work as their comments say.

- sipgw_client.py, run as a subprocess like a monitoring job would, against a real
  in-process gateway: the demo's tone and echo, an answered browser-to-browser call,
  and the exit status of every way to fail;
- click-to-call.html in headless Chromium, served by another origin than the gateway,
  makes a real call to the echo extension;
- sipgw.service passes `systemd-analyze verify`; nginx-sipgw.conf passes `nginx -t` and,
  run for real, carries the client's wss:// call to the gateway;
- the TOML examples load.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.cli import build_parser
from gateway.config import User, from_toml
from tests.support.audio import read_wav, tone_present, write_tone_wav
from tests.support.browser import chromium_available, launch_browser, wait_for_tone
from tests.support.gateway import RunningGateway, gateway_config, running_gateway
from tests.support.ports import free_tcp_udp_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CLIENT = EXAMPLES / "sipgw_client.py"
# Every run hands its own limits to the client; this only stops a hung subprocess.
SUBPROCESS_LIMIT = 45.0


@dataclass
class ClientRun:
    code: int
    stdout: str
    stderr: str

    def messages(self, prefix: str) -> list[dict[str, Any]]:
        """The protocol messages the client printed: "<- " received, "-> " sent."""
        return [json.loads(line[3:]) for line in self.stdout.splitlines() if line[:3] == prefix]

    def types(self, prefix: str = "<- ") -> list[str]:
        return [m["type"] for m in self.messages(prefix)]


async def start_client(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    # From another directory, so the client cannot lean on the repository's modules.
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT),
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process, early: str = "") -> ClientRun:
    try:
        async with asyncio.timeout(SUBPROCESS_LIMIT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("sipgw_client.py did not exit in time") from None
    assert process.returncode is not None
    return ClientRun(process.returncode, early + out.decode(), err.decode())


async def run_client(*args: str, cwd: Path) -> ClientRun:
    return await finish(await start_client(*args, cwd=cwd))


def loopback(*args: str) -> tuple[str, ...]:
    return (*args, "--ice-address", "127.0.0.1", "--timeout", "15")


# --- the command-line client ---------------------------------------------------------------


async def test_client_dials_tone_extension_records_it_and_checks_it(
    demo_gateway: RunningGateway, tmp_path: Path
) -> None:
    heard = tmp_path / "heard.wav"
    run = await run_client(
        *loopback("--url", demo_gateway.ws_url, "--dial", "601", "--duration", "3"),
        "--record",
        str(heard),
        "--expect-tone",
        "440",
        cwd=tmp_path,
    )
    assert run.code == 0, run.stderr
    assert run.types("<- ") == ["welcome", "ringing", "answer", "hangup"], run.stdout
    assert run.types("-> ") == ["hello", "call", "hangup"]
    assert run.messages("<- ")[-1]["code"] == 200
    assert "expected 440 Hz (+/- 15): ok" in run.stderr
    samples, rate = read_wav(heard)
    assert len(samples) > 2 * rate  # about 3 s connected
    assert tone_present(samples, rate, 440.0, last_seconds=1.0)


async def test_client_hears_its_own_tone_from_echo_and_sends_dtmf(
    demo_gateway: RunningGateway, tmp_path: Path
) -> None:
    run = await run_client(
        *loopback("--url", demo_gateway.ws_url, "--dial", "600", "--duration", "3"),
        *("--tone", "1000", "--expect-tone", "1000", "--dtmf", "12#", "--dtmf-delay", "0.5"),
        cwd=tmp_path,
    )
    assert run.code == 0, run.stderr
    dtmf = [m for m in run.messages("-> ") if m["type"] == "dtmf"]
    assert [m["digits"] for m in dtmf] == ["12#"]
    assert "error" not in run.types("<- "), run.stdout


async def test_client_exits_3_when_the_expected_tone_is_not_heard(
    demo_gateway: RunningGateway, tmp_path: Path
) -> None:
    run = await run_client(
        *loopback("--url", demo_gateway.ws_url, "--dial", "601", "--duration", "2"),
        *("--expect-tone", "1000"),
        cwd=tmp_path,
    )
    assert run.code == 3, run.stderr
    assert re.search(r"heard: 4[34]\d\.\d Hz", run.stderr), run.stderr
    assert "expected 1000 Hz (+/- 15): FAILED" in run.stderr


async def test_client_plays_a_wav_file_into_the_echo(
    demo_gateway: RunningGateway, tmp_path: Path
) -> None:
    # 44.1 kHz stereo, half a second, looped: the client resamples and mixes it down.
    wav = write_tone_wav(tmp_path / "mic.wav", 800.0, seconds=0.5, sample_rate=44100, channels=2)
    run = await run_client(
        *loopback("--url", demo_gateway.ws_url, "--dial", "600", "--duration", "2.5"),
        *("--play", str(wav), "--expect-tone", "800"),
        cwd=tmp_path,
    )
    assert run.code == 0, run.stderr


async def test_client_answers_a_call_from_another_user(tmp_path: Path) -> None:
    users = (
        User(name="alice", password="a-pass", extension="1001"),
        User(name="bob", password="b-pass", extension="1002"),
    )
    async with running_gateway(gateway_config(users=users)) as running:
        url = running.ws_url
        bob = await start_client(
            *loopback("--url", url, "--user", "bob", "--password", "b-pass", "--answer"),
            *("--tone", "700", "--duration", "5", "--expect-tone", "500"),
            cwd=tmp_path,
        )
        assert bob.stdout is not None
        # Bob's session must exist before Alice dials, or the gateway answers 480.
        early = ""
        async with asyncio.timeout(15):
            while '"type": "welcome"' not in early:
                line = await bob.stdout.readline()
                assert line, "bob's client exited before its welcome"
                early += line.decode()
        alice = await run_client(
            *loopback("--url", url, "--user", "alice", "--password", "a-pass", "--dial", "1002"),
            *("--tone", "500", "--duration", "3", "--expect-tone", "700"),
            cwd=tmp_path,
        )
        answered = await finish(bob, early)
    assert alice.code == 0, alice.stderr
    assert answered.code == 0, answered.stderr
    assert answered.types("<- ") == ["welcome", "incoming", "answer", "hangup"], answered.stdout
    assert answered.messages("<- ")[1]["from"] == "1001"
    assert answered.types("-> ") == ["hello", "accept"]
    assert "the far end hung up" in answered.stderr


async def test_client_wrong_password_exits_1(tmp_path: Path) -> None:
    users = (User(name="alice", password="a-pass", extension="1001"),)
    async with running_gateway(gateway_config(users=users)) as running:
        run = await run_client(
            *loopback("--url", running.ws_url, "--user", "alice", "--password", "nope"),
            *("--dial", "600"),
            cwd=tmp_path,
        )
    assert run.code == 1
    assert "sign-in refused: auth-failed" in run.stderr
    assert run.types("-> ") == ["hello"]


async def test_client_unroutable_number_exits_1_without_a_second_hangup(
    demo_gateway: RunningGateway, tmp_path: Path
) -> None:
    run = await run_client(*loopback("--url", demo_gateway.ws_url, "--dial", "999"), cwd=tmp_path)
    assert run.code == 1
    assert "call failed: Not Found (404)" in run.stderr
    assert run.types("-> ") == ["hello", "call"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it once the socket is closed


async def test_client_bad_urls_fail_with_a_clear_message(
    demo_gateway: RunningGateway, tmp_path: Path
) -> None:
    refused = f"ws://127.0.0.1:{closed_port()}/ws"
    run = await run_client(*loopback("--url", refused, "--dial", "600"), cwd=tmp_path)
    assert run.code == 1
    assert f"cannot connect to {refused}" in run.stderr
    assert run.stdout == ""

    not_ws = demo_gateway.ws_url.replace("/ws", "/nothing")
    run = await run_client(*loopback("--url", not_ws, "--dial", "600"), cwd=tmp_path)
    assert run.code == 1
    assert f"{not_ws} is not a sipgw WebSocket (HTTP 404" in run.stderr

    run = await run_client("--url", demo_gateway.url, "--dial", "600", cwd=tmp_path)
    assert run.code == 2
    assert "--url must look like ws://host:port/ws" in run.stderr


async def test_client_refuses_an_unusable_wav(tmp_path: Path) -> None:
    run = await run_client(
        "--url", "ws://127.0.0.1:9/ws", "--dial", "600", "--play", "missing.wav", cwd=tmp_path
    )
    assert run.code == 2
    assert "--play: cannot read missing.wav" in run.stderr


# --- the click-to-call snippet -----------------------------------------------------------

SNIPPET = EXAMPLES / "click-to-call.html"

# Runs after the page loaded: records every state the snippet shows, in order.
RECORD_STATES_JS = """
() => {
  window.c2cStates = [];
  const line = document.getElementById("sipgw-c2c-state");
  new MutationObserver(() => {
    const states = window.c2cStates;
    if (states[states.length - 1] !== line.dataset.state) states.push(line.dataset.state);
  }).observe(line, { attributes: true, attributeFilter: ["data-state"] });
}
"""


def test_click_to_call_is_small_and_self_contained() -> None:
    text = SNIPPET.read_text()
    assert len(text.splitlines()) < 150
    # No build step, nothing fetched from elsewhere: no src/href, imports or url().
    assert not re.search(r"\b(src|href)\s*=|@import|url\(|<link\b|\bimport\b", text)
    assert "<script>" in text and "SNIPPET START" in text and "SNIPPET END" in text


@asynccontextmanager
async def serve_file(path: Path) -> AsyncIterator[str]:
    """Another origin than the gateway's, as for a page on the integrator's own site."""
    app = web.Application()

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def wait_until(condition: Any, within: float, what: str) -> None:
    try:
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Debian package chromium not installed")
async def test_click_to_call_calls_the_echo_in_chromium(
    demo_gateway: RunningGateway, tmp_path: Path
) -> None:
    mic = write_tone_wav(tmp_path / "mic.wav", 1000.0, seconds=30)
    async with serve_file(SNIPPET) as page_url, launch_browser(mic) as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        settings = {"url": demo_gateway.ws_url, "number": "600"}
        await page.add_init_script(f"window.sipgwClickToCall = {json.dumps(settings)};")
        await page.goto(page_url)
        assert await page.text_content("#sipgw-c2c-button") == "Call us"
        await page.evaluate(RECORD_STATES_JS)
        await page.click("#sipgw-c2c-button")
        await page.wait_for_selector("#sipgw-c2c-state[data-state=connected]", timeout=15_000)
        assert await page.text_content("#sipgw-c2c-button") == "Hang up"
        heard = await wait_for_tone(
            page,
            1000.0,
            within=10,
            stream_expr="document.getElementById('sipgw-c2c-audio').srcObject",
        )
        assert abs(heard.frequency - 1000.0) < 15, heard
        assert demo_gateway.gateway.health()["calls"]["active"] == 1
        await page.click("#sipgw-c2c-button")
        await page.wait_for_selector("#sipgw-c2c-state[data-state=ended]", timeout=10_000)
        states = await page.evaluate("window.c2cStates")
        assert states == ["connecting", "calling", "ringing", "connected", "ended"]
        assert await page.text_content("#sipgw-c2c-state") == "Call ended"
        assert await page.text_content("#sipgw-c2c-button") == "Call us"
        assert errors == []
    # The gateway saw the hangup (or the socket close) and released the call.
    await wait_until(
        lambda: demo_gateway.gateway.health()["calls"]["active"] == 0, 10, "the call ended"
    )


# --- systemd and nginx -------------------------------------------------------------------

UNIT = EXAMPLES / "sipgw.service"
NGINX_CONF = EXAMPLES / "nginx-sipgw.conf"


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_runs_sipgw_as_its_own_user_and_restarts() -> None:
    settings = unit_settings(UNIT.read_text())
    assert settings["User"] == ["sipgw"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    # The network stays reachable: sockets for IPv4/6, and no PrivateNetwork.
    assert {"AF_INET", "AF_INET6"} <= set(settings["RestrictAddressFamilies"][0].split())
    assert "PrivateNetwork" not in settings
    command = settings["ExecStart"][0].split()
    assert command[0].endswith("/sipgw")
    args = build_parser().parse_args(command[1:])
    assert (args.command, str(args.config)) == ("run", "/etc/sipgw/sipgw.toml")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = UNIT.read_text()
    # verify insists that the program exists: point at one that does, same arguments.
    program = shutil.which("sipgw") or shutil.which("true") or "/bin/true"
    unit = tmp_path / "sipgw.service"
    unit.write_text(text.replace("/opt/sipgw/bin/sipgw", program))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    about_unit = [
        line for line in (result.stdout + result.stderr).splitlines() if unit.name in line
    ]
    assert result.returncode == 0, result.stderr
    # Unknown or misspelt keys are only warnings, with exit status 0.
    assert about_unit == []


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA, for the client's --cafile)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def nginx_config(directory: Path, site: str) -> Path:
    """A main nginx.conf that includes `site` in the http context, as conf.d does."""
    (directory / "sipgw.conf").write_text(site)
    main = directory / "nginx.conf"
    main.write_text(
        f"pid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log;\n"
        "events {}\n"
        "http {\n"
        "  access_log off;\n"
        f"  client_body_temp_path {directory}/body;\n"
        f"  proxy_temp_path {directory}/proxy;\n"
        f"  include {directory}/sipgw.conf;\n"
        "}\n"
    )
    return main


def with_certificate(site: str, cert: Path, key: Path) -> str:
    site = site.replace("/etc/letsencrypt/live/phone.example.com/fullchain.pem", str(cert))
    return site.replace("/etc/letsencrypt/live/phone.example.com/privkey.pem", str(key))


needs_nginx = pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("openssl") is None,
    reason="nginx (e.g. Debian package nginx-light) or openssl not installed",
)


@needs_nginx
def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    main = nginx_config(tmp_path, with_certificate(NGINX_CONF.read_text(), cert, key))
    result = subprocess.run(
        ["nginx", "-t", "-c", str(main), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr


def on_loopback_ports(site: str, http_port: int, tls_port: int, gateway_port: int) -> str:
    """The example with its public ports and upstream moved to free ports on 127.0.0.1."""
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
        "listen [::]:80;": "",
        "listen [::]:443 ssl;": "",
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{gateway_port};",
    }
    for old, new in replacements.items():
        assert old in site, f"{old!r} is no longer in {NGINX_CONF.name}"
        site = site.replace(old, new)
    return site


@asynccontextmanager
async def nginx_running(main: Path, directory: Path, port: int) -> AsyncIterator[None]:
    process = await asyncio.create_subprocess_exec(
        "nginx",
        *("-c", str(main), "-p", str(directory), "-e", str(directory / "error.log")),
        *("-g", "daemon off; master_process off;"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while True:
                if process.returncode is not None:
                    log = (directory / "error.log").read_text(errors="replace")
                    raise AssertionError(f"nginx exited: {log}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                break
        yield
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


@needs_nginx
async def test_nginx_config_carries_a_wss_call_to_the_gateway(
    demo_gateway: RunningGateway, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    http_port, tls_port = free_tcp_udp_port(), free_tcp_udp_port()
    site = on_loopback_ports(
        with_certificate(NGINX_CONF.read_text(), cert, key),
        http_port,
        tls_port,
        demo_gateway.http_port,
    )
    main = nginx_config(tmp_path, site)
    async with nginx_running(main, tmp_path, tls_port):
        run = await run_client(
            *loopback("--url", f"wss://127.0.0.1:{tls_port}/ws", "--cafile", str(cert)),
            *("--dial", "601", "--duration", "2", "--expect-tone", "440"),
            cwd=tmp_path,
        )
        untrusted = await run_client(
            *loopback("--url", f"wss://127.0.0.1:{tls_port}/ws", "--dial", "601"), cwd=tmp_path
        )
    assert run.code == 0, run.stderr
    assert run.types("<- ") == ["welcome", "ringing", "answer", "hangup"]
    # Without --cafile the self-signed certificate is refused, not silently accepted.
    assert untrusted.code == 1
    assert "certificate verify failed" in untrusted.stderr


# --- configuration examples --------------------------------------------------------------


def test_kamailio_example_registers_an_account_for_a_user() -> None:
    config = from_toml(EXAMPLES / "sipgw-kamailio.toml")
    (account,) = config.all_accounts
    assert account.register and account.credentials is not None
    # Inbound INVITEs carry the registered Contact's user: a user must own it.
    owner = config.user_by_extension(account.credentials.username)
    assert owner is not None and owner.name == "alice"


def test_ip_trunk_example_has_no_credentials_and_no_registration() -> None:
    config = from_toml(EXAMPLES / "sipgw-ip-trunk.toml")
    (account,) = config.all_accounts
    assert account.credentials is None and not account.register
    assert account.asserted_identity and account.prefixes == ("+",)
    assert config.public_address == "198.51.100.7"
    assert all(u.extension and u.caller_id for u in config.users)
