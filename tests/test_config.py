"""gateway.config: the example files, validation errors that name the key, trunk URIs."""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, ConfigError, from_mapping, from_toml, parse_trunk
from gateway.sip.transport import TransportKind
from tests.support.gateway import TEST_T1, running_gateway
from tests.support.webrtc_client import WebRtcClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_EXAMPLE = EXAMPLES / "sipgw.toml"
TRUNK_EXAMPLE = EXAMPLES / "sipgw-trunk.toml"
CONFIGURATION_DOC = EXAMPLES.parent / "docs" / "configuration.md"
DOC_TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", CONFIGURATION_DOC.read_text(), re.DOTALL)

# Every key from_mapping reads, by section; the demo example must name each of them.
KEYS = {
    "server": ["host", "http_port"],
    "sip": ["host", "port", "transports", "public_address", "t1"],
    "media": ["rtp_port_min", "rtp_port_max", "ice_addresses", "ice_servers"],
    "calls": ["no_answer_timeout"],
    "demo": ["echo_extension", "tone_extension", "tone_frequency"],
    "trunk": ["uri", "username", "password", "realm", "from_user", "from_domain"],
}

# A commented-out setting of the example: `#key = value` or `#[trunk]` (no space after
# the #), while prose comments are `# text`.
_COMMENTED_SETTING = re.compile(r"^#(\[trunk\]|[a-z_]+ = .*)$", re.MULTILINE)


def uncomment_trunk(text: str) -> str:
    return _COMMENTED_SETTING.sub(r"\1", text)


# --- the example files ------------------------------------------------------------------


def test_demo_example_loads_as_the_defaults() -> None:
    config = from_toml(DEMO_EXAMPLE)
    assert config == Config(), "examples/sipgw.toml should show the defaults"
    assert config.demo_mode


def test_demo_example_names_every_key() -> None:
    text = DEMO_EXAMPLE.read_text()
    for section, keys in KEYS.items():
        assert re.search(rf"^#?\[{section}\]$", text, re.MULTILINE), f"[{section}] missing"
        for key in keys:
            assert re.search(rf"^#? ?{key} = ", text, re.MULTILINE), f"{section}.{key} missing"


def test_demo_example_with_trunk_uncommented_has_a_trunk() -> None:
    config = from_mapping(tomllib.loads(uncomment_trunk(DEMO_EXAMPLE.read_text())))
    assert config.trunk is not None
    assert str(config.trunk.uri) == "sip:pbx.example.com:5060;transport=udp"
    assert config.trunk.credentials is not None
    assert (config.trunk.credentials.username, config.trunk.credentials.realm) == (
        "1000",
        "pbx.example.com",
    )
    assert (config.trunk.from_user, config.trunk.domain) == ("1000", "pbx.example.com")
    assert not config.demo_mode


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


# --- known gaps in gateway/config.py (reported; strict so a fix shows up here) -----------


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
