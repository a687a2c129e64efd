"""The gateway's services in one process: SIP user agent, registrations, RTP ports, the
demo endpoint, browser users and their sessions, and the routing of calls between them."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import time
from typing import TYPE_CHECKING, Any

from sipmessage import URI, Address

from gateway.calls.call import Route
from gateway.calls.inbound import InboundCall
from gateway.calls.outbound import OutboundCall
from gateway.calls.page import PageMessage
from gateway.calls.peer import PeerCall
from gateway.calls.timing import SetupTimes
from gateway.cluster import Cluster, RemoteCall, RemoteSession, WorkerSpec
from gateway.config import Config, Trunk, User
from gateway.demo.endpoint import DemoEndpoint
from gateway.dialplan import normalise
from gateway.media import aiortc_seam, sip_leg
from gateway.media.ports import PortAllocator
from gateway.routing import Router
from gateway.security import SecurityEvent, SecurityEvents
from gateway.signaling import messages
from gateway.signin.authenticator import Authenticator
from gateway.sip.guard import GuardEvent, SipGuard
from gateway.sip.registration import Registration, RegistrationStatus
from gateway.sip.transaction import Timers
from gateway.sip.ua import IncomingInvite, UserAgent

if TYPE_CHECKING:
    from gateway.signaling.session import Session

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, config: Config, worker: WorkerSpec | None = None) -> None:
        self.config = config
        self.timers = Timers(t1=config.sip_t1)
        self.ports = PortAllocator(config.rtp_port_min, config.rtp_port_max)
        self.ua = UserAgent(
            config.sip_bind,
            config.sip_port,
            timers=self.timers,
            kinds=config.sip_transports,
            advertised_host=config.advertised_address,
            tls=config.sip_tls,
        )
        self.ua.on_invite = self._on_invite
        self.demo: DemoEndpoint | None = None
        if config.demo_mode:
            self.demo = DemoEndpoint(
                "127.0.0.1",
                self.ports,
                echo_extension=config.demo_echo_extension,
                tone_extension=config.demo_tone_extension,
                tone_frequency=config.demo_tone_frequency,
                timers=self.timers,
            )
        self.sessions: set[Session] = set()
        self.registrations: dict[str, Registration] = {}
        self.calls_total = 0
        self.setup_times = SetupTimes()
        # Refused sign-ins, policy refusals, untrusted INVITEs...: logged and counted.
        self.security = SecurityEvents()
        self.signin = Authenticator(config.signin, config.users, self.security)
        # Trusted sources and the per-source rate limit, consulted by the SIP stack.
        self.sip_guard = SipGuard(config.sip_guard, self._guard_event)
        self.ua.transport.admit = self.sip_guard.admit_datagram
        self.ua.screen = self.sip_guard.screen
        # The dial plan, dialling policy and call caps, for calls, transfers and redirects.
        self.router = Router(config, self.security, lambda: self.demo.port if self.demo else None)
        self._inbound: set[InboundCall] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # One of several workers: pages and calls may sit in different processes.
        self.cluster = Cluster(self, worker) if worker is not None else None

    @property
    def registers(self) -> bool:
        """Only the first worker registers: one Contact per account at the registrar."""
        return self.cluster is None or self.cluster.index == 0

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        aiortc_seam.install()
        aiortc_seam.configure_ice_addresses(self.config.effective_ice_addresses())
        await self.sip_guard.start(self.trusted_hosts())
        await self.ua.start()
        if self.demo is not None:
            await self.demo.start()
        if self.cluster is not None:
            await self.cluster.start()
        if self.signin.open and not _is_loopback(self.config.host):
            log.warning("no [[users]] configured: anyone who reaches the page can place calls")
        plain = self.signin.plain_text_users()
        if plain:
            log.warning(
                "plain-text password for user(s) %s: use password_hash (sipgw hash-password)",
                ", ".join(plain),
            )
        for account in self.config.all_accounts:
            if account.register and self.registers:
                await self._register(account)

    def trusted_hosts(self) -> list[str]:
        """Where the accounts' requests come from: their hosts and outbound proxies."""
        accounts = self.config.all_accounts
        proxies = [a.outbound_proxy.host for a in accounts if a.outbound_proxy is not None]
        return [a.uri.host for a in accounts] + proxies

    def _guard_event(self, event: GuardEvent, src: str, user: str | None, detail: str) -> None:
        kind = {
            GuardEvent.UNTRUSTED: SecurityEvent.UNTRUSTED_INVITE,
            GuardEvent.BLOCKED: SecurityEvent.RATE_LIMITED,
        }[event]
        self.security.record(kind, src, user=user, detail=detail)

    async def _register(self, account: Trunk) -> None:
        assert account.credentials is not None
        user = account.credentials.username
        registration = Registration(
            self.ua,
            registrar=URI(
                scheme="sip",
                host=account.uri.host,
                port=account.uri.port,
                parameters=account.uri.parameters,
            ),
            peer=account.peer,
            aor=Address(uri=URI(scheme="sip", user=user, host=account.domain)),
            credentials=account.credentials,
            expires=account.expires,
            contact_user=user,
            on_change=functools.partial(self._registration_changed, account.name),
        )
        self.registrations[account.name] = registration
        await registration.start()

    def _registration_changed(self, account: str, status: RegistrationStatus) -> None:
        update = messages.Registration.of(account, status)
        if self.cluster is not None:
            self.cluster.registration_changed(update)
        self.notify_pages(update)

    def notify_pages(self, message: PageMessage) -> None:
        for session in self.sessions:
            if session.greeted:
                session.notify(message)

    async def end_calls(self, reason: str) -> None:
        await asyncio.gather(
            *(session.end_calls(reason) for session in list(self.sessions)),
            return_exceptions=True,
        )

    async def stop(self) -> None:
        for session in list(self.sessions):
            await session.close()
        await asyncio.gather(*(c.close() for c in list(self._inbound)), return_exceptions=True)
        await asyncio.gather(
            *(r.stop() for r in self.registrations.values()), return_exceptions=True
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.close()
        if self.demo is not None:
            await self.demo.close()
        await self.ua.close()
        await self.sip_guard.close()

    @property
    def sip_port(self) -> int:
        return self.ua.port

    # --- users and sessions ------------------------------------------------------------

    async def authenticate(
        self, name: str | None, token: str | None, src: str | None = None
    ) -> User | None:
        """The user `hello` names, if its password or signed token is right and neither the
        user nor the address is locked out (gateway/signin); with no users and no token
        secret (the demo, or an anonymous click-to-call page), whoever says hello."""
        return await self.signin.sign_in(name, token, src or "-")

    def attach(self, session: Session) -> None:
        """The session said hello: its user's calls may ring it, from any worker."""
        self.sessions.add(session)
        if self.cluster is not None:
            self.cluster.announce(session)

    def detach(self, session: Session) -> None:
        self.sessions.discard(session)
        if self.cluster is not None and session.greeted:
            self.cluster.withdraw(session)

    def sessions_of(self, user: User) -> list[Session | RemoteSession]:
        local: list[Session | RemoteSession] = [
            s
            for s in self.sessions
            if s.greeted and s.user is not None and s.user.name == user.name
        ]
        return local + (self.cluster.sessions_of(user) if self.cluster is not None else [])

    # --- outbound ---------------------------------------------------------------------

    def place_call(self, session: Session, call_id: str, to: str, offer: str) -> Any:
        if to.startswith(("sip:", "sips:")):
            raise ValueError("dial a number or extension; SIP URIs are not routed")
        number = normalise(to, self.config.dial_plan)
        callee = self.config.user_by_extension(number) if self.config.users else None
        call: Any
        if callee is not None:
            # Browser to browser: no phone network to pay, but it counts toward the caps.
            call = PeerCall(
                call_id,
                caller=session,
                caller_user=session.user,
                callee=callee,
                sessions=[s for s in self.sessions_of(callee) if s is not session],
                offer=offer,
                ring_timeout=self.config.ring_timeout,
            )
            self.router.admit(session.user, None, call, session.peer)
        else:
            route = self.route(number)
            self.router.check(session.user, number, route.trunk, session.peer)
            call = OutboundCall(
                call_id,
                to=number,
                offer=offer,
                route=route,
                ua=self.ua,
                config=self.config,
                ports=self.ports,
                notify=session.notify,
                user=session.user,
                timings=self.setup_times,
            )
            call.redirector = self.router
            self.router.admit(session.user, route.trunk, call, session.peer)
        self.calls_total += 1
        return call

    def route(self, number: str) -> Route:
        return self.router.route(number)

    def transfer_target(self, to: str, call: Any, src: str | None = None) -> URI:
        """Refer-To for a blind transfer: the number on the call's own account, if the
        call's user may dial it (the far end places that call on our account's bill)."""
        number = normalise(to, self.config.dial_plan)
        account: Trunk | None = getattr(call, "account", None)
        self.router.check(getattr(call, "user", None), number, account, src or "-")
        if account is None:
            route = self.route(number)
            return route.target
        # The account's own host and port, unless it names a From domain of its own.
        port = None if account.from_domain else account.uri.port
        return URI(scheme=account.uri.scheme, user=number, host=account.domain, port=port)

    # --- inbound ----------------------------------------------------------------------

    def _on_invite(self, incoming: IncomingInvite) -> None:
        request = incoming.request
        target = request.uri.user or request.to_address.uri.user or ""
        user = self.config.user_by_extension(target)
        if user is None and self.config.users:
            incoming.reject(404)
            return
        if user is None:
            # No users configured: an INVITE for a name rings the sessions that said it.
            user = User(name=target)
        sessions = self.sessions_of(user)
        if not sessions:
            incoming.reject(480, "Temporarily Unavailable (not online)")
            return
        self.calls_total += 1
        call = InboundCall(
            secrets.token_hex(8),
            incoming,
            user=user,
            sessions=list(sessions),
            ua=self.ua,
            config=self.config,
            ports=self.ports,
            account=self._account_for(incoming),
        )
        call.redirector = self.router
        self._inbound.add(call)
        call.ended.add_done_callback(lambda _f: self._inbound.discard(call))
        task = asyncio.ensure_future(call.start())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _account_for(self, incoming: IncomingInvite) -> Trunk | None:
        """The account an INVITE came through, by its source address (the trunk, proxy or
        registrar host); None for anything else, which then gets no account privileges
        (no REFER, no credentials)."""
        source = incoming.peer.host
        return next((a for a in self.config.all_accounts if a.peer.host == source), None)

    # --- what the pages and /healthz see --------------------------------------------------

    def browser_ice_servers(self, user: User | None = None) -> list[dict[str, Any]]:
        servers: list[dict[str, Any]] = []
        if self.config.turn_secret:
            servers.append(
                {
                    "urls": list(self.config.turn_urls),
                    **turn_credentials(
                        self.config.turn_secret,
                        user.name if user else "anonymous",
                        self.config.turn_ttl,
                    ),
                }
            )
        for server in self.config.ice_servers:
            entry: dict[str, Any] = {"urls": list(server.urls)}
            if server.username is not None:
                entry["username"] = server.username
                entry["credential"] = server.credential
            servers.append(entry)
        return servers

    def demo_info(self) -> dict[str, str] | None:
        if self.demo is None:
            return None
        return {"echo": self.demo.echo_extension, "tone": self.demo.tone_extension}

    def registrations_now(self) -> list[messages.Registration]:
        """Every account's registration, this worker's and (with workers) the others'."""
        states = [messages.Registration.of(n, r.status) for n, r in self.registrations.items()]
        if self.cluster is not None:
            states += list(self.cluster.registrations.values())
        return states

    def registration_states(self) -> list[dict[str, Any]]:
        return [r.entry() for r in self.registrations_now()]

    def active_calls(self) -> list[Any]:
        """Calls this worker carries (a call another worker owns is counted there)."""
        calls: dict[str, Any] = {}
        for session in self.sessions:
            for call in session.calls.values():
                if call.active and not isinstance(call, RemoteCall):
                    calls[call.id] = call
        calls.update({c.id: c for c in self._inbound if c.active})
        return list(calls.values())

    def health(self) -> dict[str, Any]:
        calls = self.active_calls()
        active = len(calls)
        health: dict[str, Any] = {
            "status": "ok",
            "sip": {
                "port": self.sip_port,
                "transports": [k.value for k in self.ua.transport.kinds],
            },
            "trunk": str(self.config.trunk.uri) if self.config.trunk else None,
            "accounts": [a.name for a in self.config.all_accounts],
            "registrations": self.registration_states(),
            "demo": self.demo_info(),
            "sessions": len(self.sessions),
            "calls": {
                "active": active,
                "total": self.calls_total,
                "list": [c.describe() for c in calls],
            },
            "rtp_ports_in_use": self.ports.in_use,
            "rtp_dropped_packets": dict(sip_leg.DROPPED.counts),
            "sip_transactions": self.ua.tl.active,
            "setup_ms": self.setup_times.summary(),
            # What a leak would grow: a soak (benchmarks/soak.py) watches these stay flat.
            "process": {"tasks": len(asyncio.all_tasks()), "fds": _open_fds()},
        }
        if self.cluster is not None:
            health["worker"] = {"index": self.cluster.index, "count": self.cluster.spec.count}
        return health


def turn_credentials(secret: str, user: str, ttl: int, now: float | None = None) -> dict[str, str]:
    """TURN REST API credentials (draft-uberti-behave-turn-rest, coturn use-auth-secret):
    the username carries its expiry, so coturn checks them with the shared secret alone."""
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"username": username, "credential": base64.b64encode(digest).decode()}


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
