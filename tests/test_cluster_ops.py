"""gateway/cluster/ops.py: every worker message is a typed op, checked whole before use."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.cluster import RemoteSession, ops
from gateway.config import User
from gateway.signaling.messages import Registration
from gateway.signaling.session import Session

EVERY_OP: list[ops.Op] = [
    ops.Sync(),
    ops.Announce("0123456789abcdef", "alice"),
    ops.Withdraw("0123456789abcdef"),
    ops.RegistrationChanged(Registration("trunk", "failed", "Forbidden", 403, None)),
    ops.RegistrationChanged(Registration("trunk", "registered", expires=600)),
    ops.Request("0123456789abcdef", '{"type":"hangup","id":"c1"}'),
    ops.Notify("0123456789abcdef", {"type": "ringing", "id": "c1", "code": 180}),
    ops.Adopt("0123456789abcdef", "c1"),
    ops.Release("0123456789abcdef", "c1"),
]


@pytest.mark.parametrize("op", EVERY_OP, ids=lambda op: type(op).__name__)
def test_every_op_survives_the_socket(op: ops.Op) -> None:
    assert ops.decode(ops.encode(op, 1), workers=2) == (1, op)


def _datagram(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\x00",
        b"[1]",
        b'"sync"',
        _datagram(op="sync"),  # no sender
        _datagram(op="sync", **{"from": 2}),  # no such worker
        _datagram(op="sync", **{"from": True}),
        _datagram(op="?", **{"from": 1}),
        _datagram(op=["sync"], **{"from": 1}),
        _datagram(op="session", session="s1", **{"from": 1}),  # no user
        _datagram(op="session", session=1, user="alice", **{"from": 1}),
        _datagram(op="session", session="", user="alice", **{"from": 1}),
        _datagram(op="gone", session="s" * 129, **{"from": 1}),
        _datagram(op="request", session="s1", text=None, **{"from": 1}),
        _datagram(op="notify", session="s1", message="hi", **{"from": 1}),
        _datagram(op="notify", session="s1", message={"id": "c1"}, **{"from": 1}),
        _datagram(op="adopt", session="s1", **{"from": 1}),
        _datagram(op="release", session="s1", call=7, **{"from": 1}),
        _datagram(op="registration", entry=[], **{"from": 1}),
        _datagram(op="registration", entry={"account": "t", "state": "odd"}, **{"from": 1}),
        _datagram(
            op="registration",
            entry={"account": "t", "state": "failed", "code": "403"},
            **{"from": 1},
        ),
    ],
)
def test_malformed_datagrams_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        ops.decode(data, workers=2)


class _Mesh:
    """The part of Cluster a RemoteSession uses: what it sends, to which worker."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, ops.Op]] = []

    def send(self, worker: int, op: ops.Op) -> None:
        self.sent.append((worker, op))


class _Call:
    id = "c1"


async def test_a_remote_page_adopts_before_it_is_told_and_releases_once() -> None:
    """Composed, not a Session subclass: what it says goes over the worker socket as typed
    ops, adopt ahead of the `incoming` it goes with (the page's worker must know the call
    before the page can answer it)."""
    assert not issubclass(RemoteSession, Session)
    mesh = _Mesh()
    page = RemoteSession(None, mesh, "0123456789abcdef", User(name="bob"), 1)  # type: ignore[arg-type]
    call = _Call()
    page.notify({"type": "incoming", "id": "c1", "from": "alice"})
    page.adopt(call)
    assert mesh.sent == [(1, ops.Adopt("0123456789abcdef", "c1"))]
    await asyncio.sleep(0)  # the next loop turn
    assert mesh.sent[1] == (
        1,
        ops.Notify("0123456789abcdef", {"type": "incoming", "id": "c1", "from": "alice"}),
    )
    assert page.calls == {"c1": call}
    page.release(call)
    page.release(call)
    assert mesh.sent[2:] == [(1, ops.Release("0123456789abcdef", "c1"))]
    assert page.calls == {}
