"""Who may start something with us over SIP, and how fast anyone may talk to us.

Two checks by source address, the way a Kamailio edge does them with its permissions and
pike modules:

- Trust: a new out-of-dialog request that could start something (INVITE, REFER, MESSAGE,
  SUBSCRIBE, REGISTER, ...) is served only from a trusted source: the configured accounts'
  hosts and outbound proxies (resolved to addresses) and the `sip.trusted` networks. Anyone
  else gets the same 403 whatever the Request-URI names, so a scanner learns nothing about
  which users exist. OPTIONS stays open (peers use it as a keep-alive); CANCEL, BYE and ACK
  outside a dialog match nothing and are answered 481 or ignored by the UA anyway.
- Pike: a token bucket per source address over every request; a source that exceeds it is
  blocked for `block_seconds`, and its requests are dropped without an answer (an answer
  would amplify the flood). Responses are never counted or dropped: they answer our own
  transactions. Trusted sources are exempt, as Kamailio deployments usually write it
  (`if (!allow_source_address()) { if (!pike_check_req()) drop; }`): a trunk or PBX
  legitimately sends bursts (many calls at once, re-INVITEs, keep-alives), and blocking it
  would drop real calls.

Nothing here imports from above gateway/sip/; events go up through a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from sipmessage import Request

from gateway.sip.transaction import ServerTransaction
from gateway.sip.transport import Peer
from gateway.sip.values import GuardSettings as GuardSettings

log = logging.getLogger(__name__)

# Trusted when `sip.trusted` is not set, so that zero configuration (the demo, sipp or a PBX
# on the same host) keeps working; a deployment that sets `sip.trusted` says exactly which
# networks it trusts, loopback included or not.
LOOPBACK = ("127.0.0.1/32", "::1/128")
# Out-of-dialog requests anyone may send: they start nothing.
OPEN_METHODS = frozenset({"OPTIONS", "CANCEL", "BYE", "ACK"})
# How often account host names are looked up again (their addresses may move).
RESOLVE_INTERVAL = 300.0
RESOLVE_TIMEOUT = 5.0
# Bucket table bound: a spray from many addresses evicts the least recently seen ones.
MAX_SOURCES = 4096

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class GuardEvent(StrEnum):
    UNTRUSTED = "untrusted"  # a request that could start something, from an untrusted source
    BLOCKED = "blocked"  # a source went over the rate limit and is now blocked


# (what happened, source address, the Request-URI user or None, detail)
Reporter = Callable[[GuardEvent, str, str | None, str], None]


def _address(host: str) -> IpAddress | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedSources:
    """Fixed networks (from configuration) and host addresses (resolved, replaceable)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )
        self.addresses: frozenset[IpAddress] = frozenset()

    def set_addresses(self, addresses: Iterable[str]) -> None:
        found = (_address(a) for a in addresses)
        self.addresses = frozenset(a for a in found if a is not None)

    def __contains__(self, host: object) -> bool:
        address = _address(host) if isinstance(host, str) else None
        if address is None:
            return False
        return address in self.addresses or any(address in n for n in self.networks)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class Pike:
    """Token bucket per source with a temporary block, in bounded memory."""

    def __init__(
        self,
        rate: float,
        burst: int,
        block_seconds: float,
        *,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.block_seconds = block_seconds
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # Source -> end of its block; every block lasts as long, so insertion order is
        # expiry order and the first entry is the next to end.
        self._blocked: OrderedDict[str, float] = OrderedDict()
        self.blocks = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    @property
    def sources(self) -> int:
        return len(self._buckets)

    @property
    def blocked(self) -> int:
        self._expire(self._clock())
        return len(self._blocked)

    def _expire(self, now: float) -> None:
        while self._blocked:
            source, until = next(iter(self._blocked.items()))
            if until > now:
                break
            del self._blocked[source]

    def admit(self, source: str) -> tuple[bool, bool]:
        """(admitted, newly blocked) for one request from `source`."""
        now = self._clock()
        until = self._blocked.get(source)
        if until is not None:
            if now < until:
                self.dropped += 1
                return False, False
            del self._blocked[source]
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[source] = bucket
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True, False
        self._expire(now)
        self._blocked[source] = now + self.block_seconds
        if len(self._blocked) > self.max_sources:
            self._blocked.popitem(last=False)
        # Unblocked, it starts again with a full burst (as after a quiet time).
        del self._buckets[source]
        self.blocks += 1
        self.dropped += 1
        return False, True


class SipGuard:
    """The policy the transport and the user agent consult; see the module docstring."""

    def __init__(self, settings: GuardSettings, report: Reporter | None = None) -> None:
        self.settings = settings
        networks = LOOPBACK if settings.trusted is None else settings.trusted
        self.trusted = TrustedSources(networks)
        self.pike = Pike(settings.rate_limit, settings.rate_burst, settings.block_seconds)
        self.report = report
        self.refused = 0
        self._hosts: tuple[str, ...] = ()
        # Host -> its addresses at the last successful look-up.
        self._resolved: dict[str, frozenset[str]] = {}
        self._task: asyncio.Task[None] | None = None

    # --- hooks ------------------------------------------------------------------------

    def admit_datagram(self, source: str, data: bytes) -> bool:
        """Transport hook, before parsing: False drops the message without an answer."""
        if not self.pike.enabled or data[:16].lstrip(b"\r\n").startswith(b"SIP/"):
            return True
        if source in self.trusted:
            return True
        admitted, blocked = self.pike.admit(source)
        if blocked and self.report is not None:
            detail = (
                f"over {self.settings.rate_limit:g} requests/s (burst "
                f"{self.settings.rate_burst}): dropped for {self.settings.block_seconds:g} s"
            )
            self.report(GuardEvent.BLOCKED, source, None, detail)
        return admitted

    def screen(self, request: Request, peer: Peer, tx: ServerTransaction) -> bool:
        """User agent hook for a new out-of-dialog request: True lets it through; False
        means it was answered here (403) and the UA must not serve it."""
        if request.method in OPEN_METHODS or peer.host in self.trusted:
            return True
        self.refused += 1
        # One response for every user and every method: nothing to tell them apart by.
        tx.respond_code(403)
        if self.report is not None:
            user = request.uri.user
            detail = f"{request.method} from a source that is not trusted"
            self.report(GuardEvent.UNTRUSTED, peer.host, user, detail)
        return False

    # --- trusted hosts ------------------------------------------------------------------

    async def start(self, hosts: Iterable[str]) -> None:
        """Resolve the accounts' hosts now and again every RESOLVE_INTERVAL."""
        self._hosts = tuple(dict.fromkeys(hosts))
        await self.refresh()
        if any(_address(h) is None for h in self._hosts):
            self._task = asyncio.ensure_future(self._refresh_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        for host in self._hosts:
            found = await _resolve(host)
            # A failed look-up keeps what was trusted before: a DNS hiccup must not refuse
            # the trunk's calls.
            if found:
                self._resolved[host] = frozenset(found)
        addresses = set().union(*self._resolved.values())
        self.trusted.set_addresses(addresses)
        log.debug("trusted SIP hosts %s: %s", self._hosts, sorted(addresses))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(RESOLVE_INTERVAL)
            await self.refresh()


async def _resolve(host: str) -> set[str]:
    if _address(host) is not None:
        return {host}
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, TimeoutError) as exc:
        log.warning("cannot resolve trusted SIP host %s: %s", host, exc)
        return set()
    return {str(info[4][0]) for info in infos}
