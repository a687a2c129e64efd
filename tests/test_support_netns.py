"""The loopback-only check, here and inside a namespace made for the occasion."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.netns import in_loopback_only_netns, network_interfaces

REPO = Path(__file__).resolve().parent.parent


def _in_new_netns(code: str) -> str:
    """stdout of `python -c code` run under `unshare -n`; skips where that is impossible."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) not installed")
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {result.stderr.strip()}")
    return result.stdout.strip()


def test_loopback_is_always_listed() -> None:
    assert "lo" in network_interfaces()
    assert in_loopback_only_netns() == (network_interfaces() == {"lo"})


def test_true_inside_unshare_n() -> None:
    probe = "from tests.support.netns import in_loopback_only_netns as f; print(f())"
    assert _in_new_netns(probe) == "True"


def test_false_with_a_second_interface() -> None:
    # A veth pair inside a throwaway namespace: no effect on the machine.
    if shutil.which("ip") is None:
        pytest.skip("ip (iproute2) not installed")
    probe = (
        "import subprocess; "
        "subprocess.run('ip link add v0 type veth peer name v1'.split(), check=True); "
        "from tests.support.netns import in_loopback_only_netns as f; print(f())"
    )
    assert _in_new_netns(probe) == "False"
