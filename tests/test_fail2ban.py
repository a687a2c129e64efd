"""The shipped fail2ban filter (examples/fail2ban/filter.d/sipgw.conf), as committed, matches
the security lines `sipgw run` logs while it is attacked, and takes the attacker's address
from them, never an address written inside a peer-controlled value."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from tests.support.sip_probe import SipProbe
from tests.support.sipgw_process import sipgw_run

FILTER = Path(__file__).resolve().parent.parent / "examples/fail2ban/filter.d/sipgw.conf"
FAIL2BAN_REGEX = shutil.which("fail2ban-regex")

pytestmark = pytest.mark.skipif(
    FAIL2BAN_REGEX is None, reason="fail2ban-regex not installed (Debian package fail2ban)"
)

CONFIG = """
[[users]]
name = "alice"
extension = "1001"

[sip]
rate_limit = 1.0
rate_burst = 5
block_seconds = 60.0
"""
BANNABLE = re.compile(r"SECURITY event=(?:untrusted-invite|rate-limited) src=(\S+)")
SIP_PORT = re.compile(r"SIP on [\d.]+:(\d+)")


async def fail2ban_regex(log: Path) -> list[str]:
    """The address fail2ban takes from each line its filter matches."""
    assert FAIL2BAN_REGEX is not None
    process = await asyncio.create_subprocess_exec(
        "timeout",
        "60",
        FAIL2BAN_REGEX,
        "--out",
        "ip",
        str(log),
        str(FILTER),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().split()


async def test_filter_matches_the_gateways_own_security_lines(tmp_path: Path) -> None:
    config = tmp_path / "sipgw.toml"
    config.write_text(CONFIG)
    async with sipgw_run(["--config", str(config)]) as running:
        match = SIP_PORT.search(running.log())
        assert match, running.log()
        port = int(match.group(1))
        # Two scanners send INVITEs (the same user and another), a third floods OPTIONS.
        for host, users in (("127.0.0.5", ("1001", "1001", "9999")), ("127.0.0.6", ("1001",))):
            async with SipProbe(host, port) as scanner:
                for user in users:
                    assert (await scanner.invite(user)).code == 403
        async with SipProbe("127.0.0.7", port) as flooder:
            for _ in range(8):
                flooder.request("OPTIONS", "1001")
            async with asyncio.timeout(10):
                while "event=rate-limited src=127.0.0.7" not in running.log():
                    await asyncio.sleep(0.05)
    log = tmp_path / "sipgw.log"
    log.write_text(running.log())
    expected = BANNABLE.findall(running.log())
    assert set(expected) == {"127.0.0.5", "127.0.0.6", "127.0.0.7"}, running.log()
    assert sorted(await fail2ban_regex(log)) == sorted(expected)


async def test_filter_takes_src_and_not_an_address_inside_a_value(tmp_path: Path) -> None:
    # A hostile user name written into the line (security.py strips quotes and control
    # characters, not words) must not make fail2ban ban a third party.
    forged = "gateway.security: SECURITY event=auth-failed src=192.0.2.99"
    log = tmp_path / "sipgw.log"
    log.write_text(
        "2026-12-03 10:00:00,123 WARNING gateway.security: SECURITY event=auth-failed "
        f'src=198.51.100.4 user="x {forged}" detail="bad password"\n'
        "2026-12-03 10:00:01,123 WARNING w2 gateway.security: SECURITY event=lockout "
        'src=2001:db8::7 user="alice"\n'
        "2026-12-03 10:00:02,123 WARNING gateway.security: SECURITY event=origin-refused "
        'src=203.0.113.9 detail="Origin https://evil.example"\n'
        "2026-12-03 10:00:03,123 INFO gateway.web.app: session 1 opened from 203.0.113.8\n"
    )
    assert await fail2ban_regex(log) == ["198.51.100.4", "2001:db8::7"]
