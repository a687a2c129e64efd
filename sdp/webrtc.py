"""What a browser's SDP must carry for WebRTC media: ICE credentials and a DTLS fingerprint.

aiortc accepts a description without them and then fails later, in a task of its own (an
assertion in the DTLS transport's start, an exception nobody retrieves): a hostile page
could make the gateway log errors at will. Refuse such SDP up front instead, with a reason.
"""

from __future__ import annotations

from .errors import SdpParseError
from .parse import first_audio, guarded, parse_session


def check_webrtc(text: str) -> None:
    """Raise SdpParseError unless the first active audio section has ICE credentials and a
    DTLS fingerprint (each at media or session level, RFC 8839 and RFC 8122)."""
    session = parse_session(text)
    with guarded("reading the browser's SDP"):
        _, media = first_audio(session, active_only=True)
    for key, what in (("iceUfrag", "ICE ufrag"), ("icePwd", "ICE password")):
        if not (media.get(key) or session.get(key)):
            raise SdpParseError(f"no {what} (a=ice-{key[3:].lower()}): not a WebRTC description")
    fingerprint = media.get("fingerprint") or session.get("fingerprint")
    if not isinstance(fingerprint, dict) or not fingerprint.get("hash"):
        raise SdpParseError("no DTLS fingerprint (a=fingerprint): not a WebRTC description")
