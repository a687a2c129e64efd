"""What a gateway holds, counted, so a test can prove a scenario gave everything back.

`ResourceSnapshot.take(gateway)` counts open file descriptors, RTP port pairs, asyncio
tasks, SIP transactions, dialogs and open RTCPeerConnections; `assert_back_to(baseline)`
waits (with a deadline, polling, never a fixed sleep) until every count is at most the
baseline's, and fails naming the counts that stayed up. Everything in this process counts
(the test's own WebRTC clients too), so close what the test itself opened first.
"""

from __future__ import annotations

import asyncio
import gc
import os
from dataclasses import asdict, dataclass
from typing import Any

from aiortc import RTCPeerConnection


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_targets() -> list[str]:
    """What each open fd is (socket:[inode], a file, a pipe): to name a leak."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile, or the listing's own fd
    return sorted(_socket_name(t) for t in targets)


def _socket_name(target: str) -> str:
    """socket:[inode] -> udp 127.0.0.1:port (or tcp), when /proc/net says."""
    if not target.startswith("socket:["):
        return target
    inode = target[8:-1]
    for proto in ("udp", "tcp", "udp6", "tcp6"):
        try:
            lines = open(f"/proc/self/net/{proto}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] == inode:
                host, port = fields[1].split(":")
                return f"{proto} {host}:{int(port, 16)} ({target})"
    return target


def live_peer_connections() -> int:
    """RTCPeerConnections not closed yet (closed ones may linger until collected)."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, RTCPeerConnection)
        and getattr(obj, "_RTCPeerConnection__isClosed", None) is None
    )


@dataclass(frozen=True)
class ResourceSnapshot:
    fds: int
    rtp_ports: int
    tasks: int
    transactions: int
    dialogs: int
    peer_connections: int

    @classmethod
    def take(cls, gateway: Any) -> ResourceSnapshot:
        return cls(
            fds=open_fds(),
            rtp_ports=gateway.ports.in_use,
            tasks=len(asyncio.all_tasks()),
            transactions=gateway.ua.tl.active,
            dialogs=gateway.ua.dialog_count,
            peer_connections=live_peer_connections(),
        )

    def excess_over(self, baseline: ResourceSnapshot) -> dict[str, tuple[int, int]]:
        """{name: (now, baseline)} for every count above the baseline."""
        now, base = asdict(self), asdict(baseline)
        return {k: (now[k], base[k]) for k in now if now[k] > base[k]}


async def assert_back_to(
    gateway: Any, baseline: ResourceSnapshot, *, timeout: float = 15.0, slack_fds: int = 0
) -> ResourceSnapshot:
    """Wait until the gateway holds no more than at `baseline`; fail with what stayed up.

    Transactions end 64*T1 after their final response (T1 is small in tests), and an
    aiortc peer connection closes its sockets a little after `close()`: hence the wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        now = ResourceSnapshot.take(gateway)
        excess = now.excess_over(baseline)
        if "fds" in excess and excess["fds"][0] <= baseline.fds + slack_fds:
            del excess["fds"]
        if not excess:
            return now
        if loop.time() >= deadline:
            raise AssertionError(
                f"resources not released after {timeout:.0f} s: {excess}; fds: {fd_targets()}"
            )
        await asyncio.sleep(0.1)
