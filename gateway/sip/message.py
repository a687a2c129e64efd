"""SIP message values: parsing with validation, serialising with Content-Length, builders.

sipmessage parses one complete message and serialises it, but leaves two things to us
(STYLE.md): it does not compute Content-Length, and it does not check that the headers
every transaction needs (RFC 3261 section 8.1.1) are present and well formed.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import sipmessage.address
import sipmessage.mediatype
import sipmessage.via
from sipmessage import URI, Address, CSeq, Headers, Message, Request, Response, Via
from sipmessage.message import COMPACT_FORMS

# RFC 3261 section 8.1.1.7: the branch of every transaction we create starts with this cookie.
MAGIC_COOKIE = "z9hG4bK"
# Anything larger does not fit a UDP datagram we would accept; a bigger header block is an attack.
MAX_MESSAGE_SIZE = 65_535
MAX_HEADER_LINES = 200
MAX_HEADER_BYTES = 16_384
# RFC 3261 section 8.1.1.5 and 20.16: a CSeq number fits in 32 bits.
MAX_CSEQ = 2**32 - 1
# RFC 3261 section 7.3.1: a line starting with whitespace continues the previous header field.
_FOLD = re.compile(rb"[ \t]*\r\n[ \t]+")
# Headers that may appear once: two values (RFC 4475 mcl01, multi01) leave the message ambiguous.
_SINGLE_HEADERS = ("From", "To", "Call-ID", "CSeq", "Content-Length")

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    603: "Decline",
}


class SipParseError(ValueError):
    """A datagram or stream segment is not a usable SIP message; `reason` goes into the
    answer's reason phrase (`status`: 400, or 505 for another SIP version, 416 for a
    Request-URI scheme we do not serve)."""

    def __init__(self, reason: str, request: Request | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        # Set when the request line and the headers needed to answer (Via, From, To,
        # Call-ID, CSeq) were readable, so the transport can still send an answer back.
        self.request = request
        self.status = status


class _AddressError(ValueError):
    def __init__(self) -> None:
        super().__init__("Address is not valid")


class _ViaError(ValueError):
    def __init__(self) -> None:
        super().__init__("Via is not valid")


class _MediaTypeError(ValueError):
    def __init__(self) -> None:
        super().__init__("MediaType is not valid")


def _unshare_library_errors() -> None:
    """sipmessage raises one module-level ValueError object per grammar (Address, Via,
    MediaType). Each raise of the same object adds the raising frames, which hold the peer's
    datagram, to that object's __traceback__: every bad message would stay in memory for
    good, and every logged traceback would be longer than the last. sipmessage looks these
    names up when it raises (`raise ADDRESS_EXCEPTION`, `raise parser_exc`), so a class in
    their place makes each raise a fresh instance that dies with its handler.
    """
    setattr(sipmessage.address, "ADDRESS_EXCEPTION", _AddressError)  # noqa: B010
    setattr(sipmessage.via, "VIA_EXCEPTION", _ViaError)  # noqa: B010
    setattr(sipmessage.mediatype, "MEDIATYPE_EXCEPTION", _MediaTypeError)  # noqa: B010


_unshare_library_errors()


def cut_loose(exc: BaseException) -> str:
    """The text of a library exception, after detaching it from the frames that raised it.

    Whatever the library raises (a shared object, or one whose context holds an earlier
    exception) must not outlive the message: callers keep only this text, and raise their
    own error outside the except block so it does not chain to this one.
    """
    text = str(exc) or type(exc).__name__
    exc.__traceback__ = None
    exc.__context__ = None
    exc.__cause__ = None
    return text


def parse_address(value: str) -> Address:
    """One name-addr or addr-spec from a peer (Refer-To, Contact, ...), or SipParseError."""
    try:
        return Address.parse(value)
    except (ValueError, IndexError) as exc:
        reason = f"bad address: {cut_loose(exc)}"
    raise SipParseError(reason)


def reason_phrase(code: int) -> str:
    return REASON_PHRASES.get(code, "Unknown")


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def _check_answerable(message: Request | Response) -> None:
    """Raise ValueError if the headers every transaction relies on are absent or bad:
    without them no response can be built or routed, so the message is dropped."""
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if message.headers.get(name) is None:
            raise ValueError(f"missing {name} header")
    # Only the top Via matters to us (section 18.2.1); parsing every hop's costs per message.
    Via.parse_many(message.headers.getlist("Via")[0])
    if not message.call_id:
        raise ValueError("empty Call-ID header")


def _bad_address_header(message: Request | Response) -> str | None:
    """The first of From, To, Contact and Record-Route that does not parse, if any.

    The layers above read these through sipmessage's lazy properties (`to_address`,
    `contact`, `record_route`): parsing them here means they never meet a parse error there,
    and an INVITE whose Contact cannot be a remote target is answered 400, not lost.
    """
    for name in ("From", "To", "Contact", "Record-Route"):
        for value in message.headers.getlist(name):
            try:
                if name in ("From", "To"):
                    Address.parse(value)
                elif value != "*":  # Contact: * is a REGISTER's (section 10.2.2)
                    Address.parse_many(value)
            except (ValueError, IndexError) as exc:
                cut_loose(exc)
                return name
    return None


def _normalise_head(head: bytes) -> bytes:
    """Unfold continuation lines and drop whitespace before colons (RFC 3261 section 7.3.1).

    sipmessage splits lines on CRLF and names on the first colon, so without this a folded
    value is rejected, or worse, its continuation becomes a header of its own.
    """
    lines = _FOLD.sub(b" ", head).split(b"\r\n")
    for index in range(1, len(lines)):
        name, colon, value = lines[index].partition(b":")
        if colon:
            lines[index] = name.rstrip(b" \t") + b": " + value.strip(b" \t")
    return b"\r\n".join(lines)


def parse(data: bytes) -> Request | Response:
    """Parse one complete SIP message, raising SipParseError with a reason fit for a 400.

    Nothing else escapes: whatever a library raises on peer input is cut loose from its
    frames and replaced by a SipParseError that does not chain to it.
    """
    try:
        return _parse(data)
    except SipParseError:
        raise
    except Exception as exc:  # peer input must never escape as a crash
        reason = f"unparseable message ({type(exc).__name__}: {cut_loose(exc)})"
    raise SipParseError(reason[:200])


def _parse(data: bytes) -> Request | Response:
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError("message too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        if b"\n\n" in data:
            raise SipParseError("bare LF line ends: SIP lines end with CRLF (RFC 3261 section 7)")
        raise SipParseError("truncated message: no end of headers")
    if len(head) > MAX_HEADER_BYTES:
        raise SipParseError("header block too large")
    if head.count(b"\r\n") > MAX_HEADER_LINES:
        raise SipParseError("too many header lines")
    head = _normalise_head(head)
    try:
        message = Message.parse(head + sep + body)
    except (ValueError, UnicodeDecodeError, IndexError) as exc:
        reason = f"unparseable message: {cut_loose(exc)}"
    else:
        return _validate(message)
    raise _unparsed_request_error(head, reason)


def _validate(message: Request | Response) -> Request | Response:
    if isinstance(message, Response) and not 100 <= message.code <= 699:
        # RFC 4475 section 3.1.2.19: a status code outside 100-699 is dropped.
        raise SipParseError(f"status code {message.code} out of range")
    try:
        _check_answerable(message)
    except (ValueError, KeyError) as exc:
        reason = cut_loose(exc) or "bad header"
    else:
        reason = ""
    if reason:
        raise SipParseError(reason)
    answerable = _answerable_or_none(message)
    for name in _SINGLE_HEADERS:
        if len(message.headers.getlist(name)) > 1:
            raise SipParseError(f"more than one {name} header", answerable)
    bad = _bad_address_header(message)
    if bad is not None:
        raise SipParseError(f"bad {bad} header", answerable)
    _check_cseq(message, answerable)
    _trim_body(message, answerable)
    return message


def _check_cseq(message: Request | Response, answerable: Request | None) -> None:
    try:
        cseq = message.cseq
    except (ValueError, KeyError) as exc:
        cut_loose(exc)
        cseq = None
    if cseq is None:
        raise SipParseError("bad CSeq header", answerable)
    if cseq.sequence > MAX_CSEQ:
        raise SipParseError("CSeq number too large", answerable)
    if isinstance(message, Request) and cseq.method != message.method:
        raise SipParseError("CSeq method does not match the request method", message)


def _trim_body(message: Request | Response, answerable: Request | None) -> None:
    """RFC 3261 section 18.3: a body shorter than Content-Length is an error, bytes past it
    are discarded."""
    length = message.headers.get("Content-Length")
    if length is None:
        return
    try:
        declared = int(length)
    except ValueError:
        declared = -1
    if declared < 0:
        raise SipParseError("bad Content-Length header", answerable)
    if declared > len(message.body):
        raise SipParseError("body shorter than Content-Length", answerable)
    message.body = message.body[:declared]


# RFC 3261 section 25.1: Method = token; SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT.
_METHOD = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_SIP_VERSION = re.compile(r"SIP/\d+\.\d+")
# RFC 3986 section 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
_URI_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Schemes we route (sipmessage parses these); others get 416 (RFC 3261 section 8.2.2.1).
_SCHEMES = ("sip", "sips", "tel")
# Stands in for a Request-URI we could not read, in a request kept only to answer it.
_NO_URI = URI(scheme="sip", host="invalid")


def _unparsed_request_error(head: bytes, reason: str) -> SipParseError:
    """A message sipmessage could not read, as an error that still answers it when it is a
    request whose Via, From, To, Call-ID and CSeq are there to copy into the response: RFC
    4475 (sections 3.1.2 and 3.3) wants 400 for a malformed Request-Line, 505 for another
    SIP version and 416 for an unknown Request-URI scheme, not silence."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return SipParseError(reason)
    start, _, rest = text.partition("\r\n")
    parts = start.split()
    if len(parts) < 3 or not _METHOD.fullmatch(parts[0]) or parts[0].startswith("SIP/"):
        return SipParseError(reason)  # a response, or not SIP at all: nobody to answer
    method, version, uri = parts[0], parts[-1], " ".join(parts[1:-1])
    if version != "SIP/2.0":
        if not _SIP_VERSION.fullmatch(version):
            return SipParseError(reason)
        # Another version's Via follows that version's grammar: only its presence counts.
        request = _stand_in_request(method, rest, check_via=False)
        if request is None:
            return SipParseError(reason)
        return SipParseError(f"SIP version {version[:20]} not supported", request, 505)
    request = _stand_in_request(method, rest, check_via=True)
    if request is None:
        return SipParseError(reason)
    if start != f"{method} {uri} {version}" or " " in uri:
        return SipParseError("malformed Request-Line: extra whitespace", request)
    scheme = _URI_SCHEME.match(uri)
    if scheme is not None and scheme.group(1).lower() not in _SCHEMES:
        return SipParseError(f"URI scheme {scheme.group(1)[:20]} not supported", request, 416)
    return SipParseError(reason, request)


def _stand_in_request(method: str, rest: str, *, check_via: bool) -> Request | None:
    """A Request carrying the headers a response copies, or None when one is missing."""
    request = Request(method=method, uri=_NO_URI)
    for line in rest.split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            name = name.strip()
            request.headers.add(COMPACT_FORMS.get(name.lower(), name), value.strip())
    headers = request.headers
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not headers.getlist(name):
            return None
    for name in _SINGLE_HEADERS:
        if len(headers.getlist(name)) > 1:
            return None
    if not headers["Call-ID"] or method == "ACK":
        return None
    if not check_via:
        return request
    try:
        Via.parse_many(headers.getlist("Via")[0])
    except (ValueError, IndexError) as exc:
        cut_loose(exc)
        return None
    return request


def _answerable_or_none(message: Request | Response) -> Request | None:
    return message if isinstance(message, Request) else None


def serialize(message: Request | Response) -> bytes:
    message.headers.set("Content-Length", str(len(message.body)))
    return bytes(message)


def top_via(message: Request | Response) -> Via:
    return Via.parse_many(message.headers.getlist("Via")[0])[0]


_BRANCH = re.compile(r";\s*branch\s*=\s*([^;,\s]+)", re.IGNORECASE)


def branch_of(message: Request | Response) -> str:
    """The top Via's branch, read from the header text: it is needed several times for
    every message, and parse() has already checked that the top Via is well formed."""
    values = message.headers.getlist("Via")
    if not values:
        return ""
    top = values[0].split(",", 1)[0]
    match = _BRANCH.search(top)
    return match.group(1) if match else ""


def tag_of(address: Address) -> str | None:
    return address.parameters.get("tag")


def with_tag(address: Address, tag: str) -> Address:
    return Address(
        uri=address.uri, name=address.name, parameters=address.parameters.replace(tag=tag)
    )


def copy_request(request: Request) -> Request:
    """A deep enough copy to change headers without touching the original."""
    copy = Request(method=request.method, uri=request.uri, body=request.body)
    _copy_headers(request.headers, copy.headers)
    return copy


def _copy_headers(source: Headers, target: Headers) -> None:
    for key in source.keys():
        target.setlist(key, list(source.getlist(key)))


def make_response(
    request: Request,
    code: int,
    phrase: str | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """RFC 3261 section 8.2.6.2: copy Via, From, Call-ID, CSeq; To gets our tag above 100."""
    response = Response(code=code, phrase=phrase or reason_phrase(code), body=body)
    headers = request.headers
    to = headers["To"]
    if to_tag is not None and code > 100 and not _has_tag(to):
        # Appended to the To exactly as received: a UAC compares it with what it sent.
        to = f"{to};tag={to_tag}"
    rows = [
        ("Via", list(headers.getlist("Via"))),
        ("From", [headers["From"]]),
        ("To", [to]),
        ("Call-ID", [headers["Call-ID"]]),
        ("CSeq", [headers["CSeq"]]),
    ]
    if content_type is not None:
        rows.append(("Content-Type", [content_type]))
    # The response has no headers yet: appending them in order skips Headers.set's search
    # of the list per header (every response the UAS sends comes through here).
    response.headers._list.extend(rows)
    return response


_TAG_PARAM = re.compile(r"(?:^|;)\s*tag\s*=", re.IGNORECASE)


def _has_tag(value: str) -> bool:
    """Whether a From/To value carries a tag parameter, without parsing the address: the
    parameters follow the closing '>' of a name-addr, or the first ';' of an addr-spec
    (RFC 3261 section 20: a URI with ';' in it must be in angle brackets)."""
    close = value.rfind(">")
    params = value[close + 1 :] if close >= 0 else value.partition(";")[2]
    return _TAG_PARAM.search(params) is not None


@dataclass(frozen=True)
class RequestSpec:
    """Everything a UA decides when it builds a request outside or inside a dialog."""

    method: str
    uri: URI
    from_address: Address
    to_address: Address
    call_id: str
    cseq: int
    contact: Address | None = None
    route: tuple[Address, ...] = ()
    body: bytes = b""
    content_type: str | None = None
    max_forwards: int = 70
    user_agent: str = "sipgw"


def build_request(spec: RequestSpec) -> Request:
    """A request without Via: the transaction layer adds it, knowing the transport."""
    request = Request(method=spec.method, uri=spec.uri, body=spec.body)
    request.headers.set("Max-Forwards", str(spec.max_forwards))
    if spec.route:
        request.headers.setlist("Route", [str(route) for route in spec.route])
    request.headers.set("From", str(spec.from_address))
    request.headers.set("To", str(spec.to_address))
    request.headers.set("Call-ID", spec.call_id)
    request.cseq = CSeq(sequence=spec.cseq, method=spec.method)
    if spec.contact is not None:
        request.headers.set("Contact", str(spec.contact))
    request.headers.set("User-Agent", spec.user_agent)
    if spec.content_type is not None:
        request.headers.set("Content-Type", spec.content_type)
    return request
