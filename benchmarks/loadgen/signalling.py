"""Signalling adapters: one call's setup and teardown against sipgw or Janus.

Both take a complete (non-trickle) SDP offer and return the answer; the media then flows
over whatever ICE pair the offer and answer agree on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from typing import Any, Literal, Protocol

import aiohttp

GatewayKind = Literal["sipgw", "janus"]


class CallFailed(Exception):
    """The gateway refused or ended the call during setup (carries its reason)."""


class Signalling(Protocol):
    async def open(self) -> None: ...
    async def call(self, offer: str, timeout: float) -> str: ...
    async def hangup(self) -> None: ...
    async def close(self) -> None: ...


class _JsonSocket:
    """A WebSocket of JSON messages with a reader task feeding a queue."""

    def __init__(self, http: aiohttp.ClientSession, url: str, protocols: tuple[str, ...] = ()):
        self._http = http
        self._url = url
        self._protocols = protocols
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.ws = await self._http.ws_connect(self._url, protocols=self._protocols, heartbeat=None)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        if self.ws is None:
            return
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                with contextlib.suppress(ValueError):
                    data = json.loads(msg.data)
                    if isinstance(data, dict):
                        self.on_message(data)
        self.on_message({"type": "_closed", "janus": "_closed"})

    def on_message(self, message: dict[str, Any]) -> None:
        self.queue.put_nowait(message)

    async def send(self, message: dict[str, Any]) -> None:
        if self.ws is None or self.ws.closed:
            raise CallFailed("socket closed")
        await self.ws.send_str(json.dumps(message))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class SipgwSignalling(_JsonSocket):
    """sipgw's browser protocol (docs/protocol.md): hello, call, answer, hangup."""

    def __init__(self, http: aiohttp.ClientSession, url: str, to: str) -> None:
        super().__init__(http, url)
        self.to = to
        self.call_id = uuid.uuid4().hex

    async def open(self) -> None:
        await super().open()
        await self.send({"type": "hello"})
        await self._expect("welcome", timeout=10)

    async def _expect(self, wanted: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.queue.get()
                kind = message.get("type")
                if kind == wanted:
                    return message
                if kind in ("hangup", "error", "_closed"):
                    raise CallFailed(f"{kind}: {message.get('code')} {message.get('reason', '')}")

    async def call(self, offer: str, timeout: float) -> str:
        await self.send({"type": "call", "id": self.call_id, "to": self.to, "sdp": offer})
        answer = await self._expect("answer", timeout)
        return str(answer["sdp"])

    async def hangup(self) -> None:
        with contextlib.suppress(CallFailed, TimeoutError):
            await self.send({"type": "hangup", "id": self.call_id})
            await self._expect("hangup", timeout=5)


class JanusSignalling(_JsonSocket):
    """Janus' JSON API over its WebSocket transport, driving janus.plugin.sip.

    create session, attach the SIP plugin, register as a guest (no REGISTER is sent), call
    with the JSEP offer, keep the session alive every 25 s, hang up.
    """

    KEEPALIVE = 25.0

    def __init__(self, http: aiohttp.ClientSession, url: str, target: str) -> None:
        super().__init__(http, url, ("janus-protocol",))
        self.target = target
        self.session = 0
        self.handle = 0
        self._tx = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._keepalive: asyncio.Task[None] | None = None

    def on_message(self, message: dict[str, Any]) -> None:
        waiter = self._pending.get(str(message.get("transaction", "")))
        if waiter is not None and message.get("janus") in ("success", "error"):
            if not waiter.done():
                waiter.set_result(message)
            return
        if message.get("janus") == "ack":
            return
        self.queue.put_nowait(message)

    async def _request(self, body: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        tx = str(next(self._tx))
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[tx] = waiter
        try:
            await self.send({**body, "transaction": tx})
            reply = await asyncio.wait_for(waiter, timeout)
        finally:
            self._pending.pop(tx, None)
        if reply.get("janus") != "success":
            raise CallFailed(f"janus {body.get('janus')}: {reply.get('error')}")
        return reply

    async def _message(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {
            "janus": "message",
            "session_id": self.session,
            "handle_id": self.handle,
            "body": body,
            "transaction": str(next(self._tx)),
        }
        if jsep is not None:
            message["jsep"] = jsep
        await self.send(message)

    async def _event(self, wanted: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.queue.get()
                if message.get("janus") == "_closed":
                    raise CallFailed("socket closed")
                data = message.get("plugindata", {}).get("data", {})
                result = data.get("result", {}) if isinstance(data, dict) else {}
                event = result.get("event") if isinstance(result, dict) else None
                if data.get("error"):
                    raise CallFailed(f"janus sip: {data.get('error')}")
                if event == wanted:
                    return message
                if event == "hangup":
                    raise CallFailed(f"hangup: {result.get('code')} {result.get('reason')}")

    async def open(self) -> None:
        await super().open()
        self.session = int((await self._request({"janus": "create"}))["data"]["id"])
        self._keepalive = asyncio.create_task(self._keep_alive())
        attach = {"janus": "attach", "session_id": self.session, "plugin": "janus.plugin.sip"}
        self.handle = int((await self._request(attach))["data"]["id"])
        await self._message(
            {"request": "register", "type": "guest", "username": "sip:bench@127.0.0.1"}
        )
        await self._event("registered", timeout=10)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.KEEPALIVE)
            with contextlib.suppress(CallFailed):
                await self.send(
                    {"janus": "keepalive", "session_id": self.session, "transaction": "ka"}
                )

    async def call(self, offer: str, timeout: float) -> str:
        await self._message(
            {"request": "call", "uri": self.target}, {"type": "offer", "sdp": offer}
        )
        accepted = await self._event("accepted", timeout)
        return str(accepted["jsep"]["sdp"])

    async def hangup(self) -> None:
        with contextlib.suppress(CallFailed, TimeoutError):
            await self._message({"request": "hangup"})
            await self._event("hangup", timeout=5)

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        with contextlib.suppress(CallFailed, TimeoutError, aiohttp.ClientError):
            await self.send({"janus": "destroy", "session_id": self.session, "transaction": "d"})
        await super().close()


def make_signalling(
    kind: GatewayKind, http: aiohttp.ClientSession, url: str, target: str
) -> Signalling:
    if kind == "sipgw":
        return SipgwSignalling(http, url, target)
    return JanusSignalling(http, url, target)
