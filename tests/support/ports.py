"""Free port numbers on loopback, for tests that must hand a port to another program.

A port found here is only free at the moment of the check: give it to the program that
binds it right away. Code that binds a socket itself should bind port 0 instead.
"""

from __future__ import annotations

import socket

_MAX_ATTEMPTS = 200


def _bind(kind: socket.SocketKind, host: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        return None
    return sock


def port_is_free(port: int, host: str = "127.0.0.1", *, tcp: bool = True, udp: bool = True) -> bool:
    """Whether `port` on `host` can be bound right now, for TCP, UDP or both."""
    kinds = [
        kind for kind, wanted in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)) if wanted
    ]
    for kind in kinds:
        sock = _bind(kind, host, port)
        if sock is None:
            return False
        sock.close()
    return True


def _ephemeral(kind: socket.SocketKind, host: str) -> int:
    sock = _bind(kind, host, 0)
    if sock is None:
        raise OSError(f"cannot bind a socket on {host}")
    with sock:
        port: int = sock.getsockname()[1]
    return port


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port on `host` that nothing is bound to right now."""
    return _ephemeral(socket.SOCK_DGRAM, host)


def free_port_pair(host: str = "127.0.0.1") -> int:
    """An even UDP port P with P+1 also free (RTP on P, RTCP on P+1)."""
    for _ in range(_MAX_ATTEMPTS):
        port = free_udp_port(host)
        if port % 2 == 0 and port < 65535 and port_is_free(port + 1, host, tcp=False):
            return port
    raise OSError(f"no free even UDP port pair on {host}")


def free_tcp_udp_port(host: str = "127.0.0.1") -> int:
    """A port number free for both TCP and UDP on `host` (SIP listens on both)."""
    for _ in range(_MAX_ATTEMPTS):
        port = _ephemeral(socket.SOCK_STREAM, host)
        if port_is_free(port, host, tcp=False):
            return port
    raise OSError(f"no port free for both TCP and UDP on {host}")
