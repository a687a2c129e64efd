"""Import layering: what importing a module may load and change (docs/architecture.md,
"Import rules"). Each check runs in a fresh interpreter, since this one has everything
loaded already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("aiortc", "aioice", "av", "aiohttp")


def _run(code: str) -> object:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_importing_the_configuration_loads_no_media_transport_or_ua_code() -> None:
    loaded = _run(
        "import json, sys\n"
        "from gateway.config import Config, ConfigError, DialPlan, Trunk, User, from_mapping,"
        " from_toml, parse_trunk, validate\n"
        "config = from_mapping({'trunk': {'uri': 'sip:pbx.example;transport=tcp'}})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert isinstance(loaded, list)
    heavy = sorted({name.split(".")[0] for name in loaded} & set(HEAVY))
    assert heavy == []
    below = {"gateway.sip.values", "gateway.media.values", "gateway.policy"}
    gateway_code = {n for n in loaded if n.startswith("gateway.")} - below
    layers = {n for n in gateway_code if not n.startswith(("gateway.config", "gateway.signin"))}
    # Packages themselves (empty __init__) are fine; no module of media, sip or calls is.
    assert layers <= {"gateway.sip", "gateway.media"}
    assert "gateway.media.aiortc_seam" not in loaded


def test_importing_the_aiortc_seam_changes_nothing_in_aiortc_until_install() -> None:
    result = _run(
        "import json, aioice.ice, aiortc.rtcpeerconnection\n"
        "from aiortc import RTCCertificate\n"
        "import copy\n"
        "def state():\n"
        "    return [aiortc.rtcpeerconnection.copy is copy, aioice.ice.copy is copy,\n"
        "            RTCCertificate.generateCertificate.__func__.__module__]\n"
        "before = state()\n"
        "from gateway.media import aiortc_seam\n"
        "from gateway.media.browser_leg import BrowserLeg\n"
        "from gateway.service import Gateway\n"
        "after_import = state()\n"
        "aiortc_seam.install()\n"
        "aiortc_seam.install()\n"
        "print(json.dumps([before, after_import, state()]))\n"
    )
    assert isinstance(result, list)
    before, after_import, installed = result
    assert before == [True, True, "aiortc.rtcdtlstransport"]
    assert after_import == before
    assert installed == [False, False, "gateway.media.aiortc_seam"]


def test_workers_and_cli_do_not_import_each_other() -> None:
    """Both run a gateway through gateway/runtime.py; a worker process never loads the CLI."""
    loaded = _run(
        "import ast, json, sys\n"
        "import gateway.workers\n"
        "tree = ast.parse(open('gateway/workers.py').read())\n"
        "names = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)"
        " for a in n.names] + [n.module for n in ast.walk(tree)"
        " if isinstance(n, ast.ImportFrom)]\n"
        "print(json.dumps(['gateway.cli' in sys.modules, 'cli' in names]))\n"
    )
    assert loaded == [False, False]


def _gateway_imports(path: Path) -> set[str]:
    """Every gateway or sdp module `path` imports, at any level (function bodies and
    TYPE_CHECKING blocks included: a hidden import is still an import)."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.split(".")[0] in ("gateway", "sdp")}


# (package, what its modules may import from gateway/ and sdp/)
RULES = {
    "sdp": ("sdp",),
    "gateway/sip": ("gateway.sip",),
    "gateway/media": ("gateway.media", "gateway.sip", "sdp"),
    "gateway/config": (
        "gateway.config",
        "gateway.sip.values",
        "gateway.media.values",
        "gateway.policy",
        "gateway.signin",
    ),
}


def test_each_layer_imports_only_from_itself_and_below() -> None:
    broken = []
    for package, allowed in RULES.items():
        for path in sorted((ROOT / package).glob("*.py")):
            for name in _gateway_imports(path):
                if not name.startswith(allowed):
                    broken.append(f"{path.relative_to(ROOT)} imports {name}")
    assert broken == []


def test_value_leaves_import_no_machinery() -> None:
    for leaf in ("gateway/sip/values.py", "gateway/media/values.py", "gateway/policy.py"):
        assert _gateway_imports(ROOT / leaf) == set(), leaf
