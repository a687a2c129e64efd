"""Our own Via and Contact for a message to a peer: the advertised host, and the port of
the listener for the transport that peer is reached over."""

from __future__ import annotations

from sipmessage import URI, Address, Via
from sipmessage.parameters import Parameters

from gateway.sip import message as sipmsg
from gateway.sip.transport import Peer, SipTransport, TransportKind


def via_for(transport: SipTransport, peer: Peer, branch: str | None = None) -> Via:
    # Over TLS the sent-by port is our TLS listener (SIP/2.0/TLS host:tls_port).
    tls = peer.transport is TransportKind.TLS
    return Via(
        transport=peer.transport.value,
        host=transport.advertised_host,
        port=transport.tls_port if tls else transport.port,
        parameters=Parameters(branch=branch or sipmsg.new_branch(), rport=None),
    )


def contact_for(
    transport: SipTransport, user: str | None, peer: Peer, *, sips: bool = False
) -> Address:
    """Our Contact for a request or dialog with `peer`, reachable over the same transport.

    Over TLS it is sip:host:tls_port;transport=tls, and sips:host:tls_port only when
    `sips` is set, which the caller must do when the Request-URI or top Route is sips:
    (RFC 3261 section 8.1.1.8). transport=tls is deprecated (section 26.2.2), but a sips:
    Contact in a sip: dialog promises TLS on every hop, which we cannot, and some peers
    cannot route to one at all: baresip 1.0 (libre) fails such a dialog with ENOSYS.
    """
    tls = peer.transport is TransportKind.TLS
    params = Parameters()
    if peer.transport is TransportKind.TCP or (tls and not sips):
        params = Parameters(transport=peer.transport.value.lower())
    uri = URI(
        scheme="sips" if tls and sips else "sip",
        user=user,
        host=transport.advertised_host,
        port=transport.tls_port if tls else transport.port,
        parameters=params,
    )
    return Address(uri=uri)
