"""Port helpers: the numbers they return must really be bindable on loopback."""

from __future__ import annotations

import socket

from tests.support.ports import free_port_pair, free_tcp_udp_port, free_udp_port, port_is_free


def _bind(kind: socket.SocketKind, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", port))
    return sock


def test_free_udp_port_binds() -> None:
    with _bind(socket.SOCK_DGRAM, free_udp_port()):
        pass


def test_free_port_pair_is_even_and_both_bind() -> None:
    port = free_port_pair()
    assert port % 2 == 0
    with _bind(socket.SOCK_DGRAM, port), _bind(socket.SOCK_DGRAM, port + 1):
        pass


def test_free_tcp_udp_port_binds_both() -> None:
    port = free_tcp_udp_port()
    with _bind(socket.SOCK_STREAM, port), _bind(socket.SOCK_DGRAM, port):
        pass


def test_port_is_free_sees_a_bound_socket() -> None:
    with _bind(socket.SOCK_DGRAM, 0) as udp:
        port = udp.getsockname()[1]
        assert not port_is_free(port)
        assert not port_is_free(port, tcp=False)
        # Only UDP is taken; whether TCP is free too depends on the machine, so no assert.
    with _bind(socket.SOCK_STREAM, 0) as tcp:
        port = tcp.getsockname()[1]
        assert not port_is_free(port, udp=False)
