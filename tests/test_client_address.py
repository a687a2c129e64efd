"""Behind a reverse proxy, the lockout, the socket cap and the security log see the page's
address, not the proxy's; and nobody else can claim an address with X-Forwarded-For."""

from __future__ import annotations

import contextlib
import logging

import aiohttp
import pytest

from gateway.security import SecurityEvent
from gateway.signin.proxies import client_address, parse_networks
from tests.test_signin import _upgrade_status, gateway_with, hello, refused, socket

LOOPBACK = parse_networks(["127.0.0.1/32", "::1/128"])


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        # nginx appends what it saw: what the client wrote itself is to the left.
        ("127.0.0.1", "10.9.9.9, 198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "198.51.100.7, 127.0.0.1", "198.51.100.7"),
        ("203.0.113.5", "198.51.100.7", "203.0.113.5"),  # not a proxy: header ignored
        ("127.0.0.1", "198.51.100.7, not-an-ip", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        (None, "198.51.100.7", "-"),
    ],
)
def test_client_address(remote: str | None, forwarded: str | None, expected: str) -> None:
    assert client_address(remote, forwarded, LOOPBACK) == expected


def test_no_trusted_proxies_means_the_header_is_never_read() -> None:
    assert client_address("127.0.0.1", "198.51.100.7", ()) == "127.0.0.1"


async def test_socket_cap_counts_each_forwarded_client(caplog: pytest.LogCaptureFixture) -> None:
    async with gateway_with(max_sockets_per_address=2) as running:
        url = running.ws_url
        first = {"X-Forwarded-For": "198.51.100.7"}
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(2):
                await stack.enter_async_context(socket(url, headers=first))
            with caplog.at_level(logging.WARNING, logger="gateway.security"):
                assert await _upgrade_status(url, first) == 429
            assert "SECURITY event=socket-limit src=198.51.100.7" in caplog.text
            # Another client behind the same proxy has its own allowance.
            assert await _upgrade_status(url, {"X-Forwarded-For": "198.51.100.8"}) == 101
            # From an address that is not a trusted proxy, the header is not believed: the
            # claim to be a fresh client does not lift that address's own cap.
            async with contextlib.AsyncExitStack() as other:
                for i in range(2):
                    spoof = {"X-Forwarded-For": f"192.0.2.{i}"}
                    await other.enter_async_context(socket(url, src="127.0.0.2", headers=spoof))
                ws = other.enter_async_context(
                    socket(url, src="127.0.0.2", headers={"X-Forwarded-For": "192.0.2.99"})
                )
                with pytest.raises(aiohttp.WSServerHandshakeError, match="429"):
                    await ws
        assert running.gateway.security.counts[SecurityEvent.SOCKET_LIMIT] == 2


async def test_lockout_behind_a_proxy_locks_the_guesser_not_everyone() -> None:
    async with gateway_with(lockout_failures=3, lockout_time=30.0) as running:
        url = running.ws_url
        attacker = {"X-Forwarded-For": "198.51.100.66"}
        async with socket(url, headers=attacker) as ws:
            for i in range(3):
                assert refused(await hello(ws, user="mallory", token=f"guess-{i}"))
            assert refused(await hello(ws, user="bob", token="bob-plain-pw"))
        # bob, behind the same proxy from his own address, is not locked out.
        async with socket(url, headers={"X-Forwarded-For": "198.51.100.20"}) as ws:
            assert (await hello(ws, user="bob", token="bob-plain-pw"))["type"] == "welcome"
