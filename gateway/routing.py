"""Where a number goes and whether its caller may dial it: the dial plan, the dialling
policy and the call caps, applied alike to the page's calls and transfers and to the far
end's redirects (3xx) and REFERs, which are routed as if the call's user had dialled the
target's user part (Asterisk's `redirect_method=user`), never to the host they name."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sipmessage import URI, Response

from gateway.calls.call import CallError, Route
from gateway.config import Config, Trunk, User
from gateway.dialplan import DialError, choose_account, credential_hosts, normalise
from gateway.policy import CallLimiter, Rules, check_number
from gateway.security import SecurityEvent, SecurityEvents
from gateway.sip.transport import Peer, TransportKind
from gateway.sip.ua import Redirect
from gateway.sip.values import peer_for_uri

log = logging.getLogger(__name__)


class Router:
    def __init__(
        self, config: Config, security: SecurityEvents, demo_port: Callable[[], int | None]
    ) -> None:
        self.config = config
        self.security = security
        self.limiter = CallLimiter()
        self._demo_port = demo_port

    def route(self, number: str) -> Route:
        trunk = choose_account(number, self.config.all_accounts)
        if trunk is not None:
            target = URI(
                scheme=trunk.uri.scheme,
                user=number,
                host=trunk.uri.host,
                port=trunk.uri.port,
                parameters=trunk.uri.parameters,
            )
            return Route(target=target, peer=trunk.peer, trunk=trunk)
        port = self._demo_port()
        assert port is not None, "no account and no demo endpoint"
        target = URI(scheme="sip", user=number, host="127.0.0.1", port=port)
        return Route(target=target, peer=Peer(TransportKind.UDP, "127.0.0.1", port), trunk=None)

    # --- policy and caps ------------------------------------------------------------

    def refusal(self, user: User | None, number: str, account: Trunk | None) -> str | None:
        """Why `user` may not dial `number` through `account`, or None."""
        layers: list[tuple[str, Rules]] = []
        if user is not None:
            layers.append((f"user {user.name}", user.policy))
        if account is not None:
            layers.append((f"account {account.name}", account.policy))
        layers.append(("policy", self.config.policy.rules))
        plan = self.config.dial_plan
        verdict = check_number(
            number,
            settings=self.config.policy,
            country_code=plan.country_code,
            international_prefix=plan.international_prefix,
            layers=layers,
        )
        return None if verdict.allowed else verdict.reason

    def check(self, user: User | None, number: str, account: Trunk | None, src: str) -> None:
        """Raise CallError("not-allowed") if the policy refuses the number."""
        why = self.refusal(user, number, account)
        if why is not None:
            name = user.name if user else None
            self.security.record(
                SecurityEvent.POLICY_REFUSED, src, user=name, detail=f"{number}: {why}"
            )
            raise CallError("not-allowed", f"calls to {number} are not allowed ({why})")

    def admit(self, user: User | None, account: Trunk | None, call: Any, src: str) -> None:
        """Count `call` against its user's and account's caps until it ends, or raise
        CallError("not-allowed") if one of them is reached."""
        name = user.name if user else "anonymous"
        rules = self.config.policy.rules
        own = user.policy if user else Rules()
        why = self.limiter.refusal(
            name,
            account.name if account else None,
            user_max=own.max_calls if own.max_calls is not None else rules.max_calls,
            per_minute=(
                own.calls_per_minute if own.calls_per_minute is not None else rules.calls_per_minute
            ),
            account_max=account.policy.max_calls if account else None,
        )
        if why is not None:
            self.security.record(SecurityEvent.CALL_LIMIT, src, user=name, detail=why)
            raise CallError("not-allowed", f"call refused: {why}")
        token = self.limiter.start(name, account.name if account else None)
        call.ended.add_done_callback(lambda _f: self.limiter.end(token))

    # --- redirects and REFER (calls.call.Redirector) ----------------------------------

    def redirect(self, call: Any, uri: URI, source: Peer) -> Redirect | None:
        account: Trunk | None = call.account
        mode = account.redirect if account is not None else "user"
        if mode == "none":
            log.info("%snot following %s: the account follows no redirects", call.prefix, uri)
            return None
        number = self._redirect_number(uri)
        if number is None and mode == "user":
            log.info("%snot following %s: no number to route", call.prefix, uri)
            return None
        if number is not None and not self._redirect_allowed(call, number, mode, source):
            return None
        if mode == "user":
            assert number is not None
            route = self.route(number)
            trunk = route.trunk
            return Redirect(
                route.target,
                route.peer,
                trunk.credentials if trunk else None,
                credential_hosts(trunk) if trunk else frozenset(),
            )
        # "uri": to the named host, with credentials for the account's own hosts only.
        hosts = credential_hosts(account) if account else frozenset()
        credentials = account.credentials if account else None
        return Redirect(uri, peer_for_uri(uri, source), credentials, hosts)

    def _redirect_number(self, uri: URI) -> str | None:
        try:
            return normalise(uri.user or "", self.config.dial_plan)
        except DialError:
            return None

    def _redirect_allowed(self, call: Any, number: str, mode: str, source: Peer) -> bool:
        """The policy of the call's user, for the account the number would go through."""
        user: User | None = getattr(call, "user", None)
        target_account = choose_account(number, self.config.all_accounts)
        why = self.refusal(user, number, target_account if mode == "user" else call.account)
        if why is None:
            return True
        # src "-": the redirecting peer is usually our own carrier, never to be banned.
        detail = f"{number} (redirect from {source.host}): {why}"
        name = user.name if user else None
        self.security.record(SecurityEvent.POLICY_REFUSED, None, user=name, detail=detail)
        return False

    def withheld(self, call: Any, peer: Peer, response: Response) -> None:
        account: Trunk | None = call.account
        self.security.record(
            SecurityEvent.CREDENTIALS_WITHHELD,
            peer.host,
            user=account.name if account else None,
            detail=f"{response.code} from {peer.host}:{peer.port}, not one of the account's hosts",
        )
