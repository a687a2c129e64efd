"""Chromium helpers: a call between two RTCPeerConnections in one page carries the fake mic.

pc1 sends the fake microphone (a 1 kHz WAV) to pc2 over loopback; the page exposes
pc2's received stream as window.softphone.remoteStream, as the softphone page will.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from tests.support.audio import write_tone_wav
from tests.support.browser import (
    SILENCE_DB,
    chromium_args,
    chromium_available,
    launch_browser,
    measure_remote_frequency,
    wait_for_tone,
)
from tests.support.netns import in_loopback_only_netns

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not chromium_available(), reason="/usr/bin/chromium missing (Debian package chromium)"
    ),
]

# Only 127.0.0.1 candidates are passed between the two connections, so the media can
# only flow on loopback even when the machine has other interfaces.
LOOPBACK_CALL_PAGE = """<!doctype html>
<html><body><script>
window.softphone = { localStream: null, remoteStream: null, state: "new" };
async function call() {
  const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  window.softphone.localStream = local;
  const pc1 = new RTCPeerConnection({ iceServers: [] });
  const pc2 = new RTCPeerConnection({ iceServers: [] });
  const forward = (to) => (event) => {
    if (event.candidate && event.candidate.address === "127.0.0.1") {
      to.addIceCandidate(event.candidate);
    }
  };
  pc1.onicecandidate = forward(pc2);
  pc2.onicecandidate = forward(pc1);
  Object.assign(window.softphone, { pc1, pc2 });
  pc2.ontrack = (event) => { window.softphone.remoteStream = event.streams[0]; };
  pc2.onconnectionstatechange = () => { window.softphone.state = pc2.connectionState; };
  local.getTracks().forEach((track) => pc1.addTrack(track, local));
  await pc1.setLocalDescription(await pc1.createOffer());
  await pc2.setRemoteDescription(pc1.localDescription);
  await pc2.setLocalDescription(await pc2.createAnswer());
  await pc1.setRemoteDescription(pc2.localDescription);
}
call().catch((error) => { window.softphone.state = "error: " + error; });
</script></body></html>
"""

# Type and address of the remote candidate each connection's selected pair sends to.
SELECTED_REMOTES_JS = """async () => {
  const remote = async (pc) => {
    const stats = [...(await pc.getStats()).values()];
    const transport = stats.find((s) => s.type === "transport");
    const pair = stats.find((s) => s.id === transport.selectedCandidatePairId);
    const candidate = stats.find((s) => s.id === pair.remoteCandidateId);
    return [candidate.candidateType, candidate.address];
  };
  return [await remote(window.softphone.pc1), await remote(window.softphone.pc2)];
}"""


SILENT_PAGE = """<!doctype html>
<html><body><script>
// A stream with an audio track that carries nothing: a muted oscillator.
const context = new AudioContext();
const destination = context.createMediaStreamDestination();
const gain = context.createGain();
gain.gain.value = 0;
const oscillator = context.createOscillator();
oscillator.connect(gain).connect(destination);
oscillator.start();
window.silentStream = destination.stream;
</script></body></html>
"""


async def _serve() -> TestServer:
    pages = {"/": LOOPBACK_CALL_PAGE, "/silent": SILENT_PAGE}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=pages[request.path], content_type="text/html")

    app = web.Application()
    for path in pages:
        app.router.add_get(path, page)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return server


async def _open(page: Page, server: TestServer, path: str = "/") -> None:
    await page.goto(f"http://127.0.0.1:{server.port}{path}")


def test_chromium_args_name_the_wav_by_absolute_path(tmp_path: Path) -> None:
    args = chromium_args(Path(tmp_path.name) / ".." / tmp_path.name / "tone.wav")
    capture = [a for a in args if a.startswith("--use-file-for-fake-audio-capture=")]
    assert len(capture) == 1
    assert Path(capture[0].split("=", 1)[1]).is_absolute()
    assert "--allow-loopback-in-peer-connection" in args
    assert not any(a.startswith("--user-data-dir") for a in args)  # Playwright refuses it


async def test_remote_stream_carries_the_fake_microphone_tone(tmp_path: Path) -> None:
    tone = write_tone_wav(tmp_path / "tone.wav", 1000, 5)
    server = await _serve()
    try:
        async with launch_browser(tone) as browser:
            page = await browser.new_page()
            await _open(page, server)
            await page.wait_for_function(
                "window.softphone.state === 'connected' || "
                "window.softphone.state.startsWith('error')",
                timeout=10_000,
            )
            assert await page.evaluate("window.softphone.state") == "connected"
            remotes = await page.evaluate(SELECTED_REMOTES_JS)
            if in_loopback_only_netns():
                assert remotes == [["host", "127.0.0.1"], ["host", "127.0.0.1"]]
            else:
                # Only 127.0.0.1 was signalled, but Chromium also sends checks from its other
                # local addresses, and a peer may answer to that peer-reflexive source (its
                # address is hidden in stats): still this machine, but why the suite runs
                # under `unshare -n`.
                for remote in remotes:
                    assert remote == ["host", "127.0.0.1"] or remote[0] == "prflx"
            await wait_for_tone(page, 1000, within=10)
            remote = await measure_remote_frequency(page)
            assert remote.frequency == pytest.approx(1000, abs=5)
            assert remote.level_db > SILENCE_DB
            local = await measure_remote_frequency(page, "window.softphone.localStream", 1.0)
            assert local.frequency == pytest.approx(1000, abs=5)
            # The page plays neither stream, so the helper attached one muted element to each.
            helpers = await page.evaluate(
                "document.querySelectorAll('audio[data-measure-frequency]').length"
            )
            assert helpers == 2
    finally:
        await server.close()


async def test_silence_is_reported_as_silent(tmp_path: Path) -> None:
    tone = write_tone_wav(tmp_path / "tone.wav", 1000, 2)
    server = await _serve()
    try:
        async with launch_browser(tone) as browser:
            page = await browser.new_page()
            await _open(page, server, "/silent")
            measured = await measure_remote_frequency(page, "window.silentStream", 0.5)
            assert measured.silent
            with pytest.raises(AssertionError, match="no 1000 Hz tone"):
                await wait_for_tone(page, 1000, within=1.5, stream_expr="window.silentStream")
    finally:
        await server.close()
