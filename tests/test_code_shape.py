"""Issue 12's shape rules for the whole tree: no module of gateway/ or sdp/ over about 500
lines, no function or method with a cyclomatic complexity (radon) of 15 or more."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
MODULES = sorted(p for package in ("gateway", "sdp") for p in (ROOT / package).rglob("*.py"))
MAX_LINES = 520
MAX_COMPLEXITY = 14


def _functions(blocks: list[Any]) -> Iterator[Any]:
    """Every function, method and nested function or class radon found: cc_visit lists
    functions and methods, but a closure only inside its function, whose complexity leaves
    the closure's out (and a class's own complexity is its methods' average)."""
    for block in blocks:
        if hasattr(block, "methods"):
            yield from _functions([*block.methods, *block.inner_classes])
        else:
            yield block
            yield from _functions(block.closures)


def _too_complex(source: str) -> list[str]:
    radon = pytest.importorskip("radon.complexity")
    # A method comes both on its own and in its class's methods: once in the report.
    found = {
        (f.fullname, f.lineno): f.complexity
        for f in _functions(radon.cc_visit(source))
        if f.complexity > MAX_COMPLEXITY
    }
    return [f"{name} (line {line}): {cc}" for (name, line), cc in sorted(found.items())]


def test_every_package_module_is_checked() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in MODULES}
    assert {"gateway/sip/transaction.py", "sdp/parse.py", "gateway/calls/call.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_module_is_small_and_simple(module: Path) -> None:
    source = module.read_text()
    lines = source.count("\n")
    assert lines <= MAX_LINES, f"{lines} lines: split the module, one layer, ~500 lines at most"
    assert _too_complex(source) == [], "extract well-named helpers"


def test_a_complex_method_or_closure_is_caught_though_its_class_or_function_is_not() -> None:
    branches = "".join(f"        if x == {i}:\n            return {i}\n" for i in range(15))
    source = (
        "class Big:\n"
        "    def a(self):\n        return 0\n"
        "    def b(self):\n        return 1\n"
        f"    def branchy(self, x):\n{branches}        return -1\n"
        f"def outer():\n    def inner(x):\n{branches}"
        "        return -1\n    return inner\n"
    )
    assert _too_complex(source) == ["Big.branchy (line 6): 16", "inner (line 39): 16"]
    assert _too_complex("def simple(x):\n    return x\n") == []
