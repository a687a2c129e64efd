"""tests/support/kamailio.py: the Kamailio runner and the registrar.cfg template it fills.

Requests here are sent with the gateway's own transaction layer, but only to read
Kamailio's answers: registration itself is tested in test_registration.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sipmessage import URI, Address, Request, Response

from gateway.sip import message as sipmsg
from gateway.sip.auth import Credentials, DigestClient, parse_auth_header
from gateway.sip.transaction import Timers
from gateway.sip.transport import TransportKind
from gateway.sip.ua import UserAgent
from tests.support.kamailio import Kamailio, KamailioError, _listening, kamailio_available, render

kamailio_mark = pytest.mark.kamailio

needs_kamailio = pytest.mark.skipif(
    not kamailio_available(), reason="kamailio not installed (Debian package kamailio)"
)


def test_render_replaces_every_placeholder_and_refuses_leftovers() -> None:
    assert render("listen=udp:@@HOST@@:@@PORT@@", {"HOST": "127.0.0.1", "PORT": "5"}) == (
        "listen=udp:127.0.0.1:5"
    )
    with pytest.raises(KamailioError, match="@@REALM@@"):
        render('www_challenge("@@REALM@@", "1");', {"HOST": "x"})


def test_template_fills_users_and_rejects_unsafe_values() -> None:
    kamailio = Kamailio(users={"alice": "secret", "carol": "pa ss"})
    if not kamailio_available():
        pytest.skip("kamailio not installed (Debian package kamailio)")
    text = kamailio.render(5062)
    assert '$sht(users=>alice) = "secret";' in text
    assert '$sht(users=>carol) = "pa ss";' in text
    assert "listen=tcp:127.0.0.1:5062" in text and "@@" not in text
    with pytest.raises(KamailioError, match="string"):
        Kamailio(users={"eve": 'x"; exit; "'}).render(5062)
    with pytest.raises(KamailioError, match="alphanumeric"):
        Kamailio(users={"a=>b": "x"}).render(5062)


@asynccontextmanager
async def user_agent() -> AsyncIterator[UserAgent]:
    ua = UserAgent("127.0.0.1", 0, timers=Timers(t1=0.05))
    await ua.start()
    try:
        yield ua
    finally:
        await ua.close()


async def register(
    ua: UserAgent, kamailio: Kamailio, transport: TransportKind, user: str, authorization: str = ""
) -> Response:
    peer = kamailio.peer(transport)
    aor = Address.parse(f"<sip:{user}@sipgw.test>")
    request = sipmsg.build_request(
        sipmsg.RequestSpec(
            method="REGISTER",
            uri=URI.parse("sip:sipgw.test"),
            from_address=sipmsg.with_tag(aor, sipmsg.new_tag()),
            to_address=aor,
            call_id=sipmsg.new_call_id("127.0.0.1"),
            cseq=1,
            contact=ua.tl.contact_for(user, peer),
        )
    )
    request.headers.set("Expires", "60")
    if authorization:
        request.headers.set("Authorization", authorization)
    return await ua.tl.send_request(request, peer).final


@kamailio_mark
@needs_kamailio
@pytest.mark.parametrize("transport", [TransportKind.UDP, TransportKind.TCP])
async def test_listens_challenges_and_stops(transport: TransportKind) -> None:
    async with Kamailio() as kamailio, user_agent() as ua:
        assert kamailio.running and _listening(kamailio.port)
        assert f"listen=udp:127.0.0.1:{kamailio.port}" in kamailio.config()
        response = await register(ua, kamailio, transport, "alice")
        assert response.code == 401, kamailio.log()
        (challenge,) = parse_auth_header(response.headers["WWW-Authenticate"])
        assert challenge.scheme == "Digest"
        assert challenge.parameters["realm"] == "sipgw.test"
        assert challenge.parameters["qop"] == "auth"
        # Nobody has registered bob: an INVITE for him is refused by the proxy route.
        invite = ua.invite(
            target=URI.parse(kamailio.uri("bob")),
            peer=kamailio.peer(transport),
            from_address=Address.parse("<sip:carol@sipgw.test>"),
            to_address=Address.parse(f"<{kamailio.uri('bob')}>"),
            sdp=b"",
            credentials=None,
        )
        outcome = await invite.run()
        assert (outcome.code, outcome.reason) == (404, "Not Found")  # type: ignore[union-attr]
        port = kamailio.port
    assert not kamailio.running and kamailio.returncode is not None
    assert not _listening(port)
    assert "Listening on" in kamailio.log()


def challenge_request(user: str) -> Request:
    """A request with the Request-URI and method the registrar checks the digest against."""
    aor = Address.parse(f"<sip:{user}@sipgw.test>")
    return sipmsg.build_request(
        sipmsg.RequestSpec(
            method="REGISTER",
            uri=URI.parse("sip:sipgw.test"),
            from_address=aor,
            to_address=aor,
            call_id="x",
            cseq=1,
        )
    )


@kamailio_mark
@needs_kamailio
async def test_digest_passwords_come_from_the_template() -> None:
    async with Kamailio(users={"alice": "secret", "bob": "other"}) as kamailio:
        async with user_agent() as ua:
            for user, password, code in (
                ("alice", "secret", 200),
                ("bob", "other", 200),
                ("bob", "secret", 401),
                ("mallory", "secret", 401),
            ):
                challenge = await register(ua, kamailio, TransportKind.UDP, user)
                client = DigestClient(Credentials(user, password))
                retry = client.authorize(challenge_request(user), challenge)
                answer = await register(
                    ua, kamailio, TransportKind.UDP, user, retry.headers["Authorization"]
                )
                assert answer.code == code, (user, password, kamailio.log()[-2000:])


@kamailio_mark
@needs_kamailio
async def test_start_fails_loudly_on_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "broken.cfg"
    broken.write_text("#!KAMAILIO\nlisten=udp:@@HOST@@:@@PORT@@\nthis is not a config\n")
    kamailio = Kamailio(broken)
    with pytest.raises(KamailioError, match="exited at start"):
        async with asyncio.timeout(15):
            await kamailio.start()
    assert not kamailio.running
