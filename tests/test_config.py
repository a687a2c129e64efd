"""gateway.config: the example files, validation errors that name the key, trunk URIs."""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    Config,
    ConfigError,
    DialPlan,
    User,
    from_mapping,
    from_toml,
    parse_trunk,
)
from gateway.config import parse as config_parse
from gateway.dialplan import choose_account, normalise
from gateway.policy import Pattern, Rules
from gateway.signin import passwords
from gateway.sip.transport import Peer, TlsSettings, TransportKind
from tests.support.gateway import TEST_T1, running_gateway
from tests.support.webrtc_client import WebRtcClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_EXAMPLE = EXAMPLES / "sipgw.toml"
TRUNK_EXAMPLE = EXAMPLES / "sipgw-trunk.toml"
PBX_EXAMPLE = EXAMPLES / "sipgw-pbx.toml"
CONFIGURATION_DOC = EXAMPLES.parent / "docs" / "configuration.md"
DOC_TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", CONFIGURATION_DOC.read_text(), re.DOTALL)

# Every key from_mapping reads, by table as the example spells its header; the demo example
# must name each of them. Taken from the parser itself, so a new key cannot go undocumented.
EXAMPLE_TABLES = {
    "[server]": "server",
    "[sip]": "sip",
    "[sip.tls]": "sip.tls",
    "[media]": "media",
    "[calls]": "calls",
    "[dialing]": "dialing",
    "[policy]": "policy",
    "[demo]": "demo",
    "[auth]": "auth",
    "[[users]]": "users",
    "[trunk]": "trunk",
    "[[accounts]]": "trunk",  # [[accounts]] take the keys of [trunk]
}
CONFIG_KEYS = config_parse._KEYS

# A commented-out setting of the example: `#key = value` or `#[table]` (no space after the
# #), while prose comments are `# text`. A commented-out table runs from its `#[...]` line to
# the first line that is not a comment.
_COMMENTED_SETTING = re.compile(r"^#(\[.*\]|[a-z_]+ = .*)$", re.MULTILINE)


def uncomment(text: str, header: str) -> str:
    """The example with the commented-out table `header` (e.g. `[trunk]`) switched on."""
    start = text.index(f"\n#{header}\n") + 1
    end = text.find("\n\n", start)
    end = len(text) if end == -1 else end
    block = _COMMENTED_SETTING.sub(r"\1", text[start:end])
    return text[:start] + block + text[end:]


# --- the example files ------------------------------------------------------------------


def test_demo_example_loads_as_the_defaults() -> None:
    config = from_toml(DEMO_EXAMPLE)
    assert config == Config(), "examples/sipgw.toml should show the defaults"
    assert config.demo_mode


def test_demo_example_names_every_key() -> None:
    text = DEMO_EXAMPLE.read_text()
    assert set(EXAMPLE_TABLES.values()) >= set(CONFIG_KEYS) - {"accounts"}
    for header in EXAMPLE_TABLES:
        assert re.search(rf"^#?{re.escape(header)}$", text, re.MULTILINE), f"{header} missing"
    for table, keys in CONFIG_KEYS.items():
        for key in keys - {"tls"}:  # sip.tls is the [sip.tls] table
            assert re.search(rf"^#? ?{key} = ", text, re.MULTILINE), f"{table}.{key} missing"


def test_demo_example_with_trunk_uncommented_has_a_trunk() -> None:
    config = from_mapping(tomllib.loads(uncomment(DEMO_EXAMPLE.read_text(), "[trunk]")))
    assert config.trunk is not None
    assert str(config.trunk.uri) == "sip:pbx.example.com:5060;transport=udp"
    assert config.trunk.credentials is not None
    assert (config.trunk.credentials.username, config.trunk.credentials.realm) == (
        "1000",
        "pbx.example.com",
    )
    assert (config.trunk.from_user, config.trunk.domain) == ("1000", "pbx.example.com")
    assert config.trunk.name == "pbx"
    assert config.trunk.outbound_proxy is not None
    assert config.trunk.peer == Peer(TransportKind.UDP, "sbc.example.com", 5060)
    # Uncommented as shown, the remaining keys are at their defaults.
    assert not config.trunk.register and config.trunk.expires == 600
    assert config.trunk.prefixes == ()
    assert not config.trunk.asserted_identity and not config.trunk.allow_refer
    assert config.accounts == ()
    assert not config.demo_mode


def test_demo_example_with_users_and_accounts_uncommented() -> None:
    text = uncomment(uncomment(DEMO_EXAMPLE.read_text(), "[[users]]"), "[[accounts]]")
    config = from_mapping(tomllib.loads(text))
    (alice,) = config.users
    # The example keeps a hash of alice-secret, not the password (sipgw hash-password).
    assert alice.password_hash is not None
    assert passwords.verify_hash(alice.password_hash, "alice-secret")
    assert alice == User(
        name="alice",
        password_hash=alice.password_hash,
        extension="201",
        display_name="Alice Example",
        caller_id="+493012345201",
        # The example shows a user's own policy keys.
        policy=Rules(
            allow=(Pattern.parse("+33"), Pattern.parse("+1")),
            deny=(Pattern.parse("+4915"),),
            max_calls=2,
            calls_per_minute=10,
        ),
    )
    (carrier,) = config.accounts
    assert (carrier.name, carrier.prefixes, carrier.asserted_identity) == (
        "carrier",
        ("+",),
        True,
    )
    assert config.trunk is None and not config.demo_mode


def test_demo_example_with_tls_uncommented() -> None:
    config = from_mapping(tomllib.loads(uncomment(DEMO_EXAMPLE.read_text(), "[sip.tls]")))
    assert config.sip_tls == TlsSettings(
        certfile="/etc/sipgw/tls/fullchain.pem",
        keyfile="/etc/sipgw/tls/privkey.pem",
        cafile="/etc/sipgw/tls/pbx-ca.pem",
        verify_peer=True,
        server_name="pbx.example.com",
    )
    # Listening on TLS is a separate choice: the transports line still says udp and tcp.
    assert config.sip_transports == (TransportKind.UDP, TransportKind.TCP)


def test_trunk_example_loads() -> None:
    config = from_toml(TRUNK_EXAMPLE)
    trunk = config.trunk
    assert trunk is not None and trunk.credentials is not None
    assert trunk.peer.transport is TransportKind.UDP
    assert (trunk.peer.host, trunk.peer.port) == ("sip.provider.example", 5060)
    assert (trunk.credentials.username, trunk.credentials.password) == ("1000", "s3cret")
    assert trunk.credentials.realm == "sip.provider.example"
    assert config.sip_bind == config.advertised_address == "203.0.113.10"
    assert config.effective_ice_addresses() == ("203.0.113.10",)
    assert (config.rtp_port_min, config.rtp_port_max) == (20000, 20999)
    assert config.no_answer_timeout == 45.0


def test_pbx_example_loads() -> None:
    config = from_toml(PBX_EXAMPLE)
    assert [u.name for u in config.users] == ["alice", "bob"]
    assert config.user_by_extension("201") == config.user("alice")
    assert all(u.password for u in config.users), "the PBX example must require passwords"
    pbx, carrier = config.accounts
    assert config.trunk is None and config.all_accounts == (pbx, carrier)
    assert pbx.register and pbx.expires == 300 and pbx.allow_refer
    assert pbx.credentials is not None and pbx.credentials.username == "sipgw"
    assert pbx.peer == Peer(TransportKind.TCP, "pbx.example.com", 5060)
    assert carrier.peer == Peer(TransportKind.TCP, "sbc.carrier.example", 5070)
    assert not carrier.register and carrier.asserted_identity
    assert config.dial_plan == DialPlan(country_code="49")
    assert (config.ring_timeout, config.rtp_timeout) == (25.0, 30.0)
    assert config.sip_tls is None
    assert config.turn_secret and len(config.turn_urls) == 2 and config.turn_ttl == 86400
    # Typed national and international numbers reach the carrier; extensions the PBX.
    for typed, account in [("030 1234 5678", carrier), ("0044 20 7946 0958", carrier)]:
        assert choose_account(normalise(typed, config.dial_plan), config.all_accounts) is account
    assert choose_account(normalise("3005", config.dial_plan), config.all_accounts) is pbx


def test_pbx_example_with_tls_uncommented() -> None:
    text = uncomment(PBX_EXAMPLE.read_text(), "[sip.tls]").replace(
        '# transports = ["udp", "tcp", "tls"]', ""
    )
    text = text.replace('transports = ["udp", "tcp"]', 'transports = ["udp", "tcp", "tls"]')
    text = text.replace('uri = "sip:pbx.example.com;transport=tcp"', 'uri = "sips:pbx.example.com"')
    config = from_mapping(tomllib.loads(text))
    assert config.sip_transports == (TransportKind.UDP, TransportKind.TCP, TransportKind.TLS)
    assert config.sip_tls is not None and config.sip_tls.cafile == "/etc/sipgw/tls/pbx-ca.pem"
    assert config.accounts[0].peer == Peer(TransportKind.TLS, "pbx.example.com", 5061)


async def test_demo_example_makes_a_call_to_the_echo_extension() -> None:
    # The example as-is, with only the ports moved so that the test binds free ones.
    config = replace(from_toml(DEMO_EXAMPLE), http_port=0, sip_port=0, sip_t1=TEST_T1)
    async with running_gateway(config) as running:
        async with WebRtcClient(running.ws_url, tone=1000) as client:
            assert client.welcome["demo"] == {"echo": "600", "tone": "601"}
            await client.call("600")
            await client.accept_answer(await client.expect("answer"))
            heard = await client.wait_for_tone(1000)
            assert abs(heard - 1000) < 20, f"heard {heard:.0f} Hz through the echo extension"


@pytest.mark.parametrize("block", DOC_TOML_BLOCKS, ids=lambda b: b.split("\n", 1)[0])
def test_configuration_doc_examples_load(block: str) -> None:
    from_mapping(tomllib.loads(block))


def test_configuration_doc_has_toml_examples() -> None:
    assert len(DOC_TOML_BLOCKS) >= 3


def test_configuration_doc_names_every_key() -> None:
    text = CONFIGURATION_DOC.read_text()
    for table, keys in CONFIG_KEYS.items():
        for key in keys - {"tls"}:
            assert f"| `{key}` |" in text, f"{table}.{key} has no row in docs/configuration.md"


# --- validation errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"server": {"host": 127}}, "server.host"),
        ({"server": {"http_port": "8080"}}, "server.http_port"),
        ({"server": {"http_port": True}}, "server.http_port"),
        ({"sip": {"port": 5.5}}, "sip.port"),
        ({"sip": {"t1": "fast"}}, "sip.t1"),
        ({"sip": {"transports": "udp"}}, "sip.transports"),
        ({"sip": {"transports": []}}, "sip.transports"),
        ({"sip": {"public_address": 1}}, "sip.public_address"),
        ({"media": {"rtp_port_min": "20000"}}, "media.rtp_port_min"),
        ({"calls": {"no_answer_timeout": "60"}}, "calls.no_answer_timeout"),
        ({"calls": {"no_answer_timeout": 0}}, "calls.no_answer_timeout"),
        ({"demo": {"echo_extension": 600}}, "demo.echo_extension"),
        ({"demo": {"tone_frequency": "440"}}, "demo.tone_frequency"),
        ({"trunk": {"uri": 5}}, "trunk.uri"),
        ({"trunk": {"uri": "pbx", "password": 1234}}, "trunk.password"),
        ({"server": "127.0.0.1"}, "[server]"),
        ({"trunk": "sip:pbx"}, "[trunk]"),
    ],
)
def test_bad_type_names_the_key(data: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(names)):
        from_mapping(data)


def test_unknown_sections_are_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown section\(s\): sever, tls"):
        from_mapping({"sever": {"host": "0.0.0.0"}, "tls": {}})


@pytest.mark.parametrize(
    ("low", "high"),
    [(30000, 20000), (20000, 20000), (80, 20000), (20000, 70000), (1023, 2000)],
)
def test_bad_rtp_range(low: int, high: int) -> None:
    with pytest.raises(ConfigError, match=re.escape("media.rtp_port_min/max")):
        from_mapping({"media": {"rtp_port_min": low, "rtp_port_max": high}})


def test_trunk_without_uri() -> None:
    with pytest.raises(ConfigError, match=r"trunk\.uri is required"):
        from_mapping({"trunk": {"username": "1000", "password": "x"}})


def test_trunk_username_without_password() -> None:
    with pytest.raises(ConfigError, match="trunk: a username needs a password"):
        from_mapping({"trunk": {"uri": "sip:pbx.example.com", "username": "1000"}})


@pytest.mark.parametrize("transport", ["sctp", "ws"])
def test_trunk_bad_transport(transport: str) -> None:
    with pytest.raises(ConfigError, match=f"trunk: transport '{transport}' is not udp, tcp or tls"):
        from_mapping({"trunk": {"uri": f"sip:pbx.example.com;transport={transport}"}})


@pytest.mark.parametrize("uri", ["sip:", "two words", "sip:pbx:port"])
def test_trunk_not_a_uri(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"trunk: .* is not a SIP URI"):
        parse_trunk(uri)


def test_config_error_is_a_value_error() -> None:
    # Callers that catch ValueError (argparse types, for one) also see configuration errors.
    assert issubclass(ConfigError, ValueError)


def test_from_toml_missing_file_and_bad_syntax(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=f"cannot read {re.escape(str(missing))}"):
        from_toml(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nhost = 1\n")
    with pytest.raises(ConfigError, match=re.escape(str(broken))):
        from_toml(broken)


# --- values that load -------------------------------------------------------------------


def test_empty_mapping_is_the_defaults() -> None:
    assert from_mapping({}) == Config()
    # An empty [trunk] table is no trunk: the demo endpoint runs.
    assert from_mapping({"trunk": {}}).demo_mode


def test_integers_are_accepted_for_seconds() -> None:
    config = from_mapping({"calls": {"no_answer_timeout": 5}, "sip": {"t1": 1}})
    assert (config.no_answer_timeout, config.sip_t1) == (5.0, 1.0)
    assert isinstance(config.no_answer_timeout, float)


def test_transports_are_case_insensitive() -> None:
    assert from_mapping({"sip": {"transports": ["TCP"]}}).sip_transports == (TransportKind.TCP,)


def test_ice_servers_string_or_list_of_urls() -> None:
    config = from_mapping(
        {
            "media": {
                "ice_servers": [
                    {"urls": "stun:stun.example.com"},
                    {
                        "urls": ["turn:turn.example.com:3478", "turns:turn.example.com:5349"],
                        "username": "u",
                        "credential": "c",
                    },
                ]
            }
        }
    )
    stun, turn = config.ice_servers
    assert stun.urls == ("stun:stun.example.com",) and stun.username is None
    assert turn.urls == ("turn:turn.example.com:3478", "turns:turn.example.com:5349")
    assert (turn.username, turn.credential) == ("u", "c")


# --- parse_trunk ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "transport", "host", "port"),
    [
        ("pbx.example.com", TransportKind.UDP, "pbx.example.com", 5060),
        ("sip:pbx.example.com", TransportKind.UDP, "pbx.example.com", 5060),
        ("pbx.example.com:5080", TransportKind.UDP, "pbx.example.com", 5080),
        ("sip:pbx.example.com;transport=tcp", TransportKind.TCP, "pbx.example.com", 5060),
        ("sip:pbx.example.com:5070;transport=TCP", TransportKind.TCP, "pbx.example.com", 5070),
        ("sip:192.0.2.7;transport=udp", TransportKind.UDP, "192.0.2.7", 5060),
        ("sip:[2001:db8::1]", TransportKind.UDP, "2001:db8::1", 5060),
        ("[2001:db8::1]:5062", TransportKind.UDP, "2001:db8::1", 5062),
        ("sip:[2001:db8::1]:5062;transport=tcp", TransportKind.TCP, "2001:db8::1", 5062),
    ],
)
def test_parse_trunk_next_hop(uri: str, transport: TransportKind, host: str, port: int) -> None:
    trunk = parse_trunk(uri)
    assert (trunk.peer.transport, trunk.peer.host, trunk.peer.port) == (transport, host, port)
    assert trunk.credentials is None
    assert trunk.from_user == "sipgw"


def test_parse_trunk_ipv6_domain_keeps_brackets() -> None:
    # From: sip:sipgw@[2001:db8::1]: the literal must stay bracketed in a URI.
    assert parse_trunk("sip:[2001:db8::1]").domain == "[2001:db8::1]"


def test_parse_trunk_credentials_and_from() -> None:
    trunk = parse_trunk("pbx.example.com", username="1000", password="pw", realm="asterisk")
    assert trunk.credentials is not None
    assert (trunk.credentials.username, trunk.credentials.password) == ("1000", "pw")
    assert trunk.credentials.realm == "asterisk"
    assert "pw" not in repr(trunk), "the password must not reach logs through repr()"
    # From defaults to the account on the trunk's domain; both can be set.
    assert (trunk.from_user, trunk.domain) == ("1000", "pbx.example.com")
    other = parse_trunk(
        "pbx.example.com", username="1000", password="pw", from_user="+15550100", from_domain="d"
    )
    assert (other.from_user, other.domain) == ("+15550100", "d")


def test_parse_trunk_empty_password_is_a_password() -> None:
    trunk = parse_trunk("pbx", username="1000", password="")
    assert trunk.credentials is not None and trunk.credentials.password == ""


# --- ICE addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1",)),
        ("127.0.0.2", ("127.0.0.2",)),
        ("::1", ("::1",)),
        # Not loopback: aioice's own choice, every non-loopback interface.
        ("0.0.0.0", None),
        ("192.0.2.10", None),
        # A name is not looked up: use 127.0.0.1 rather than localhost.
        ("localhost", None),
    ],
)
def test_effective_ice_addresses_default(host: str, expected: tuple[str, ...] | None) -> None:
    assert Config(host=host).effective_ice_addresses() == expected


def test_effective_ice_addresses_configured_wins() -> None:
    assert Config(host="127.0.0.1", ice_addresses=("192.0.2.10",)).effective_ice_addresses() == (
        "192.0.2.10",
    )
    loaded = from_mapping({"media": {"ice_addresses": ["192.0.2.10", "2001:db8::10"]}})
    assert loaded.effective_ice_addresses() == ("192.0.2.10", "2001:db8::10")


def test_advertised_address() -> None:
    assert Config().advertised_address == "127.0.0.1"
    assert Config(host="0.0.0.0").advertised_address == "127.0.0.1"
    assert Config(sip_host="192.0.2.10").advertised_address == "192.0.2.10"
    assert Config(sip_host="0.0.0.0", public_address="203.0.113.1").advertised_address == (
        "203.0.113.1"
    )


# --- known gaps in gateway/config/ (reported; strict so a fix shows up here) -----------


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=re.escape("server.http-port")):
        from_mapping({"server": {"http-port": 8081}})


def test_unknown_sip_transport_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=re.escape("sip.transports")):
        from_mapping({"sip": {"transports": ["udp", "tls"]}})


def test_bad_ice_server_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=re.escape("media.ice_servers")):
        from_mapping({"media": {"ice_servers": ["stun:stun.example.com"]}})


def test_ice_addresses_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=re.escape("media.ice_addresses")):
        from_mapping({"media": {"ice_addresses": "127.0.0.1"}})
