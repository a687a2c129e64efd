"""Media value types the configuration names: a leaf (standard library only), so that
gateway/config/ does not load aiortc to say which STUN/TURN servers the browser leg uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None
