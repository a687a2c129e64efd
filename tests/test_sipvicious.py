"""sipvicious (PyPI), the scanner attackers run, against the gateway's SIP port on loopback:
svwar finds no extension and svcrack no password from a source that is not trusted.

sipvicious 0.3.8 parses svwar's and svcrack's `-b` (binding address) but never uses it: they
always send from 127.0.0.1. So these gateways trust only 10.0.0.0/8 (`sip.trusted` set, so
the loopback default is off) and 127.0.0.1 is the untrusted scanner. A control run against
a gateway that trusts loopback shows the same svwar scan does find the users there: the
test would fail if the trust check did not hold.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import pytest

from gateway.config import User
from gateway.sip.guard import GuardSettings
from tests.support.gateway import RunningGateway, gateway_config, running_gateway
from tests.support.sip_probe import SipProbe

BIN = Path(sys.executable).parent
SVWAR = shutil.which("sipvicious_svwar", path=str(BIN)) or shutil.which("sipvicious_svwar")
SVCRACK = shutil.which("sipvicious_svcrack", path=str(BIN)) or shutil.which("sipvicious_svcrack")

pytestmark = pytest.mark.skipif(
    SVWAR is None or SVCRACK is None,
    reason="sipvicious not installed (pip install sipvicious, in the test extra)",
)

USERS = (User(name="alice", extension="1001"), User(name="bob", extension="1005"))
UNTRUSTING = GuardSettings(trusted=("10.0.0.0/8",))
# A found extension is a table row like "| 1001      | weird          |".
FOUND = re.compile(r"^\|\s*(\d+)\s*\|", re.MULTILINE)


async def run(tool: str | None, *args: str) -> str:
    assert tool is not None
    process = await asyncio.create_subprocess_exec(
        "timeout",
        "60",
        tool,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode != 124, "sipvicious hung"
    return output.decode(errors="replace")


async def svwar(running: RunningGateway, method: str) -> tuple[set[str], str]:
    output = await run(
        SVWAR,
        *("-p", str(running.gateway.sip_port), "-e", "995-1010", "-m", method),
        *("--force", "--maximumtime", "3", "-P", "0", "127.0.0.1"),
    )
    return set(FOUND.findall(output)), output


@pytest.mark.parametrize("method", ["REGISTER", "OPTIONS", "INVITE"])
async def test_svwar_finds_no_extension_from_an_untrusted_source(method: str) -> None:
    async with running_gateway(gateway_config(users=USERS, sip_guard=UNTRUSTING)) as running:
        found, output = await svwar(running, method)
        assert found == set(), output
        assert "found nothing" in output, output
        # It did scan: the gateway answered (403, or 200 to OPTIONS), it was not silent.
        assert "No server response" not in output, output


async def test_svwar_control_run_from_a_trusted_source_finds_the_users() -> None:
    async with running_gateway(gateway_config(users=USERS)) as running:
        found, output = await svwar(running, "INVITE")
    # 480 for an existing offline user, 404 for a missing one: fine for a trusted peer.
    assert found == {"1001", "1005"}, output


async def test_svcrack_finds_no_password_and_register_gets_no_challenge() -> None:
    async with running_gateway(gateway_config(users=USERS, sip_guard=UNTRUSTING)) as running:
        # Nothing to crack: no digest challenge, whatever the source (asked first: svcrack
        # goes over the rate limit and gets 127.0.0.1 blocked for a minute).
        for source in ("127.0.0.1", "127.0.0.5"):
            async with SipProbe(source, running.gateway.sip_port) as probe:
                call_id, _ = probe.request("REGISTER", "1001")
                reply = await probe.final(call_id)
                assert reply.code == 403
                assert reply.header("WWW-Authenticate") is None
                assert reply.header("Proxy-Authenticate") is None
        port = str(running.gateway.sip_port)
        output = await run(
            SVCRACK, "-u", "1001", "-r", "1-30", "-p", port, "--maximumtime", "3", "127.0.0.1"
        )
        assert "found nothing" in output, output
        assert "The password for" not in output, output
