"""The UAS's 2xx to an INVITE, first or re-INVITE (RFC 3261 section 13.3.1.4).

The INVITE server transaction hands the 2xx to the transport once and leaves the rest to
the transaction user (section 17.2.1, RFC 6026): the UAS sends it again at T1, 2*T1,
4*T1... capped at T2, until the ACK with the INVITE's CSeq arrives, and gives up after
64*T1. A dialog whose 2xx is never ACKed is then ended with BYE by whoever asked.
"""

from __future__ import annotations

import asyncio
import logging

from sipmessage import Request, Response

from gateway.sip.transaction import ServerTransaction
from gateway.sip.transport import TransportKind

log = logging.getLogger(__name__)


async def send_2xx_until_ack(
    tx: ServerTransaction, response: Response, acked: asyncio.Future[Request]
) -> Request | None:
    """Send `response` (a 2xx) on `tx` and again until `acked` resolves: the ACK, or None
    after 64*T1 without one (or when the dialog went away and cancelled `acked`).

    Over TCP or TLS the transport is reliable and the 2xx goes once; the ACK is still
    awaited for 64*T1 (section 13.3.1.4).
    """
    timers = tx.layer.timers
    retransmit = tx.peer.transport is TransportKind.UDP
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timers.timeout
    interval = timers.t1
    tx.respond(response)
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait({acked}, timeout=min(interval, remaining))
            if acked.done():
                return None if acked.cancelled() else acked.result()
            if loop.time() >= deadline:
                break
            if retransmit:
                tx.layer.transport.send(response, tx.peer)
            interval = min(interval * 2, timers.t2)
    finally:
        acked.cancel()  # no-op once resolved; else the UA forgets the waiter
    log.info("no ACK for %d to INVITE (CSeq %d)", response.code, response.cseq.sequence)
    return None
