"""gateway.cli: flags over the TOML file over the defaults, errors, and `sipgw --help`."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.cli import build_parser, config_from_args, main
from gateway.config import Config, ConfigError
from gateway.sip.transport import TransportKind
from tests.support.sipgw_process import sipgw_run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

FILE = """
[server]
host = "127.0.0.2"
http_port = 9000

[sip]
host = "127.0.0.3"
port = 5070
transports = ["tcp"]
public_address = "198.51.100.1"

[media]
rtp_port_min = 40000
rtp_port_max = 41000
ice_addresses = ["127.0.0.2"]

[calls]
no_answer_timeout = 30

[trunk]
uri = "sip:pbx.example.com;transport=tcp"
username = "file-user"
password = "file-pass"
"""


def parse(*argv: str) -> Config:
    return config_from_args(build_parser().parse_args(["run", *argv]))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "sipgw.toml"
    path.write_text(FILE)
    return path


@pytest.fixture(autouse=True)
def keep_logging_levels() -> Iterator[None]:
    """main() sets logger levels process-wide, as a program does; give them back."""
    names = ["", "gateway.sip.transport", "aioice", "aiortc"]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


# --- precedence -------------------------------------------------------------------------


def test_no_flags_gives_the_defaults() -> None:
    assert parse() == Config()


def test_file_values_apply(config_file: Path) -> None:
    config = parse("--config", str(config_file))
    assert (config.host, config.http_port) == ("127.0.0.2", 9000)
    assert (config.sip_host, config.sip_port) == ("127.0.0.3", 5070)
    assert config.sip_transports == (TransportKind.TCP,)
    assert config.public_address == "198.51.100.1"
    assert (config.rtp_port_min, config.rtp_port_max) == (40000, 41000)
    assert config.ice_addresses == ("127.0.0.2",)
    assert config.no_answer_timeout == 30.0
    assert config.trunk is not None and str(config.trunk.uri) == "sip:pbx.example.com;transport=tcp"


def test_flags_override_the_file(config_file: Path) -> None:
    config = parse(
        "--config",
        str(config_file),
        "--host",
        "127.0.0.9",
        "--http-port",
        "9100",
        "--sip-host",
        "127.0.0.8",
        "--sip-port",
        "0",
        "--public-address",
        "203.0.113.5",
        "--rtp-ports",
        "50000-50100",
        "--ice-address",
        "127.0.0.9",
        "--ice-address",
        "::1",
        "--no-answer-timeout",
        "12.5",
    )
    assert (config.host, config.http_port) == ("127.0.0.9", 9100)
    assert (config.sip_host, config.sip_port) == ("127.0.0.8", 0)
    assert config.public_address == "203.0.113.5"
    assert (config.rtp_port_min, config.rtp_port_max) == (50000, 50100)
    assert config.ice_addresses == ("127.0.0.9", "::1")
    assert config.no_answer_timeout == 12.5
    # What no flag names stays as the file set it.
    assert config.sip_transports == (TransportKind.TCP,)
    assert config.trunk is not None and str(config.trunk.uri) == "sip:pbx.example.com;transport=tcp"


def test_one_flag_leaves_the_rest_of_the_file(config_file: Path) -> None:
    config = parse("--config", str(config_file), "--http-port", "9200")
    assert config.http_port == 9200
    assert (config.host, config.sip_port, config.rtp_port_min) == ("127.0.0.2", 5070, 40000)


def test_trunk_flag_replaces_the_file_trunk_and_keeps_its_credentials(config_file: Path) -> None:
    config = parse("--config", str(config_file), "--trunk", "sip:other.example.com;transport=tcp")
    trunk = config.trunk
    assert trunk is not None and trunk.credentials is not None
    assert (trunk.peer.transport, trunk.peer.host) == (TransportKind.TCP, "other.example.com")
    assert (trunk.credentials.username, trunk.credentials.password) == ("file-user", "file-pass")


def test_trunk_flags_with_credentials() -> None:
    config = parse(
        "--trunk", "pbx.example.com:5080", "--trunk-user", "1000", "--trunk-password", "x"
    )
    trunk = config.trunk
    assert trunk is not None and trunk.credentials is not None
    assert (trunk.peer.host, trunk.peer.port) == ("pbx.example.com", 5080)
    assert (trunk.credentials.username, trunk.credentials.password) == ("1000", "x")
    assert not config.demo_mode


# --- flag errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [("20000-30000", 20000, 30000), ("1024-65535", 1024, 65535), ("40000-40002", 40000, 40002)],
)
def test_rtp_ports(value: str, low: int, high: int) -> None:
    config = parse("--rtp-ports", value)
    assert (config.rtp_port_min, config.rtp_port_max) == (low, high)


@pytest.mark.parametrize("value", ["20000", "a-b", "20000-", "-30000", "20000:30000", "1-2-3"])
def test_rtp_ports_syntax_error(value: str) -> None:
    with pytest.raises(ConfigError, match="--rtp-ports wants MIN-MAX"):
        parse("--rtp-ports", value)


@pytest.mark.parametrize("value", ["30000-20000", "80-2000", "20000-70000", "20000-20000"])
def test_rtp_ports_range_error(value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("media.rtp_port_min/max")):
        parse("--rtp-ports", value)


@pytest.mark.parametrize("flag", ["--trunk-user", "--trunk-password"])
def test_trunk_credentials_need_trunk(flag: str) -> None:
    with pytest.raises(ConfigError, match="--trunk-user/--trunk-password need --trunk"):
        parse(flag, "1000")


def test_trunk_user_needs_a_password() -> None:
    with pytest.raises(ConfigError, match="a username needs a password"):
        parse("--trunk", "pbx.example.com", "--trunk-user", "1000")


def test_bad_trunk_uri() -> None:
    with pytest.raises(ConfigError, match="is not a SIP URI"):
        parse("--trunk", "two words")


def test_no_answer_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=re.escape("calls.no_answer_timeout")):
        parse("--no-answer-timeout", "0")


def test_non_numeric_port_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "--http-port", "eighty"])
    assert exit_info.value.code == 2
    assert "--http-port" in capsys.readouterr().err


# --- main() ---------------------------------------------------------------------------------


def test_main_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["run", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sipgw: configuration error: cannot read ")
    assert str(missing) in err and "No such file or directory" in err
    assert "Traceback" not in err


def test_main_relative_missing_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", "missing.toml"]) == 2
    assert "cannot read missing.toml" in capsys.readouterr().err


def test_main_config_error_from_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--trunk-user", "1000"]) == 2
    assert "need --trunk" in capsys.readouterr().err


def test_main_bad_file_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[media]\nrtp_port_min = "low"\n')
    assert main(["run", "--config", str(path)]) == 2
    assert "media.rtp_port_min must be int" in capsys.readouterr().err


def test_main_without_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage: sipgw" in capsys.readouterr().err


# --- the program as a user runs it ----------------------------------------------------------


def run_help(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_module_help() -> None:
    out = run_help(sys.executable, "-m", "gateway.cli", "--help")
    assert "usage: sipgw" in out and "run" in out


def test_module_run_help_mentions_trunk() -> None:
    out = run_help(sys.executable, "-m", "gateway.cli", "run", "--help")
    for flag in ("--config", "--trunk", "--trunk-user", "--rtp-ports", "--ice-address"):
        assert flag in out


def test_console_script_run_help() -> None:
    # The entry point pip installs (pyproject [project.scripts]); next to this Python first.
    script = Path(sys.executable).with_name("sipgw")
    sipgw = str(script) if script.exists() else shutil.which("sipgw")
    if sipgw is None:
        pytest.skip("the sipgw console script is not installed (pip install -e .)")
    out = run_help(sipgw, "run", "--help")
    assert "usage: sipgw run" in out and "--trunk" in out


async def test_sipgw_run_with_the_demo_example() -> None:
    # The example as shipped, with the ports moved by flags (flags beat the file).
    async with sipgw_run(["--config", str(EXAMPLES / "sipgw.toml")]) as process:
        assert process.url.startswith("http://127.0.0.1:")
        async with (
            aiohttp.ClientSession() as http,
            http.get(process.url + "healthz") as response,
        ):
            assert response.status == 200
            health = json.loads(await response.text())
    assert health["status"] == "ok"
    assert health["trunk"] is None
    assert health["demo"] == {"echo": "600", "tone": "601"}
    assert sorted(health["sip"]["transports"]) == ["TCP", "UDP"]
    assert "dial 600 (echo) or 601 (tone)" in process.log()
