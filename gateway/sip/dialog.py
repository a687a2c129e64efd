"""SIP dialogs (RFC 3261 section 12): identity, route set, remote target and CSeq."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

from sipmessage import URI, Address, Request, Response

from gateway.sip import message as sipmsg
from gateway.sip.values import Peer, peer_for_uri

log = logging.getLogger(__name__)


class DialogState(StrEnum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_address: Address
    remote_address: Address
    remote_target: URI
    route_set: tuple[Address, ...]
    local_cseq: int
    remote_cseq: int | None
    # Where the dialog's first request came from or went to: the transport to use and
    # the fallback next hop when the remote target cannot be reached otherwise.
    origin: Peer
    contact: Address
    state: DialogState = DialogState.CONFIRMED
    history: list[DialogState] = field(default_factory=list)
    # We sent the dialog's first INVITE, so the Call-ID is ours (the 491 wait, section 14.1).
    owns_call_id: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.local_tag)

    @classmethod
    def from_uac(cls, request: Request, response: Response, origin: Peer) -> Dialog:
        """Section 12.1.2: the route set is the response's Record-Route, reversed."""
        contacts = response.contact
        target = contacts[0].uri if contacts else request.uri
        remote = response.to_address
        return cls(
            call_id=request.call_id,
            local_tag=sipmsg.tag_of(request.from_address) or "",
            remote_tag=sipmsg.tag_of(remote) or "",
            local_address=request.from_address,
            remote_address=remote,
            remote_target=target,
            route_set=tuple(reversed(response.record_route)),
            local_cseq=request.cseq.sequence,
            remote_cseq=None,
            origin=origin,
            contact=request.contact[0] if request.contact else request.from_address,
            state=DialogState.CONFIRMED if response.code >= 200 else DialogState.EARLY,
            owns_call_id=True,
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str, origin: Peer, contact: Address) -> Dialog:
        """Section 12.1.1: the route set is the request's Record-Route, in order."""
        contacts = request.contact
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=sipmsg.tag_of(request.from_address) or "",
            local_address=sipmsg.with_tag(request.to_address, local_tag),
            remote_address=request.from_address,
            remote_target=contacts[0].uri if contacts else request.from_address.uri,
            route_set=tuple(request.record_route),
            local_cseq=0,
            remote_cseq=request.cseq.sequence,
            origin=origin,
            contact=contact,
            state=DialogState.EARLY,
        )

    def set_state(self, state: DialogState) -> None:
        if state is self.state and self.history:
            return
        log.debug("dialog %s: %s -> %s", self.call_id, self.state, state)
        self.state = state
        self.history.append(state)

    def next_hop(self) -> Peer:
        """Section 12.2.1.1 with loose routing: the first Route, else the remote target."""
        uri = self.route_set[0].uri if self.route_set else self.remote_target
        return peer_for_uri(uri, self.origin)

    def new_request(
        self, method: str, *, body: bytes = b"", content_type: str | None = None
    ) -> Request:
        if method not in ("ACK", "CANCEL"):
            self.local_cseq += 1
        return sipmsg.build_request(
            sipmsg.RequestSpec(
                method=method,
                uri=self.remote_target,
                from_address=self.local_address,
                to_address=self.remote_address,
                call_id=self.call_id,
                cseq=self.local_cseq,
                # Target-refresh requests and those that set up a subscription carry Contact
                # (RFC 3261 section 12.2.1.1, RFC 3515 section 2.1, RFC 6665 section 4.1.1).
                contact=self.contact
                if method in ("INVITE", "UPDATE", "REFER", "NOTIFY", "SUBSCRIBE")
                else None,
                route=self.route_set,
                body=body,
                content_type=content_type,
            )
        )

    def ack(self, invite_cseq: int) -> Request:
        """Section 13.2.2.4: ACK for a 2xx carries the INVITE's CSeq number."""
        request = self.new_request("ACK")
        request.headers.set("CSeq", f"{invite_cseq} ACK")
        return request

    def accepts(self, request: Request) -> bool:
        """Section 12.2.2: a lower CSeq than the last one is out of order."""
        sequence = request.cseq.sequence
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and sequence <= self.remote_cseq:
            return False
        self.remote_cseq = sequence
        return True
