"""Headless Debian Chromium under Playwright, set up for WebRTC calls on loopback.

The flags are the ones /work/shared/NOTES.md measured: a fake microphone that loops a
WAV file, permission prompts answered, loopback ICE candidates allowed, no lookups of
Google hosts. Open pages as http://127.0.0.1:PORT/, not localhost.

Outside a loopback-only namespace Chromium still gathers the machine's other addresses and
sends ICE checks from them to the 127.0.0.1 candidates it is given, so a peer can learn
and answer to such an address (peer-reflexive). The packets stay on this machine, but only
`unshare -n` (see tests/support/netns.py) keeps them strictly on 127.0.0.1.

measure_remote_frequency() listens to a MediaStream inside the page with WebAudio and
returns the strongest frequency, so a test can check which tone a call carries.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

CHROMIUM = Path("/usr/bin/chromium")


def chromium_available() -> bool:
    return os.access(CHROMIUM, os.X_OK)


def chromium_args(fake_audio_wav: Path) -> list[str]:
    """Command-line flags for a loopback WebRTC call with `fake_audio_wav` as microphone."""
    return [
        "--use-fake-ui-for-media-stream",  # grants getUserMedia; also stops mDNS candidates
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_audio_wav.resolve()}",  # loops the file
        "--allow-loopback-in-peer-connection",  # else no 127.0.0.1 candidate at all
        # Else Chromium still resolves Google hosts at start; keep every lookup local.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]


@asynccontextmanager
async def launch_browser(fake_audio_wav: Path) -> AsyncIterator[Browser]:
    """Headless /usr/bin/chromium with chromium_args(); closed (with Playwright) on exit."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=chromium_args(fake_audio_wav)
        )
        try:
            yield browser
        finally:
            await browser.close()


# Measured here: a 0.3-amplitude fake-microphone tone reads -18 dB in the analyser at first
# and about -44 dB once getUserMedia's automatic gain control has settled (~2 s); a
# silent track reads -300 (the clamp below). Anything under this is silence.
SILENCE_DB = -80.0


@dataclass(frozen=True)
class ToneMeasurement:
    frequency: float  # Hz, of the strongest bin above 20 Hz
    level_db: float  # that bin's level in dBFS as the AnalyserNode reports it

    @property
    def silent(self) -> bool:
        return self.level_db < SILENCE_DB


# Runs in the page on the stream's handle (no eval in the page, so a page's CSP does not
# matter). Takes [expression, seconds], the expression only for messages.
_MEASURE_JS = """
async (stream, [expression, seconds]) => {
  if (!(stream instanceof MediaStream)) {
    throw new Error(`${expression} is not a MediaStream: ${stream}`);
  }
  if (stream.getAudioTracks().length === 0) {
    throw new Error(`${expression} has no audio track`);
  }
  // Chromium feeds WebAudio from a remote WebRTC stream only while a media element
  // plays it; a muted, hidden one is enough.
  const played = [...document.querySelectorAll("audio, video")]
    .some((element) => element.srcObject === stream);
  if (!played) {
    const element = document.createElement("audio");
    element.muted = true;
    element.hidden = true;
    element.autoplay = true;
    element.dataset.measureFrequency = "";
    element.srcObject = stream;
    document.body.appendChild(element);
    await element.play().catch(() => {});
  }
  const context = new AudioContext();
  try {
    await context.resume();
    const analyser = context.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    context.createMediaStreamSource(stream).connect(analyser);
    const snapshots = 6;
    const bins = analyser.frequencyBinCount;
    const power = new Float64Array(bins);
    const snapshot = new Float32Array(bins);
    for (let i = 0; i < snapshots; i++) {
      await new Promise((resolve) => setTimeout(resolve, (seconds * 1000) / snapshots));
      analyser.getFloatFrequencyData(snapshot);
      for (let k = 0; k < bins; k++) power[k] += Math.pow(10, snapshot[k] / 10);
    }
    const binHz = context.sampleRate / analyser.fftSize;
    const db = Array.from(power, (p) => Math.max(-300, 10 * Math.log10(p / snapshots)));
    let peak = Math.max(1, Math.ceil(20 / binHz));
    for (let k = peak; k < bins; k++) if (db[k] > db[peak]) peak = k;
    let offset = 0;
    if (peak > 0 && peak < bins - 1) {
      const [left, centre, right] = [db[peak - 1], db[peak], db[peak + 1]];
      const denominator = left - 2 * centre + right;
      if (denominator !== 0) offset = (0.5 * (left - right)) / denominator;
    }
    return { frequency: (peak + offset) * binHz, levelDb: db[peak] };
  } finally {
    await context.close();
  }
}
"""


async def measure_remote_frequency(
    page: Page, stream_expr: str = "window.softphone.remoteStream", seconds: float = 1.5
) -> ToneMeasurement:
    """Strongest frequency in the MediaStream that `stream_expr` evaluates to in `page`.

    Power-averages a few AnalyserNode snapshots (fftSize 8192) over `seconds`; the peak is
    placed by parabolic interpolation. Works on remote (WebRTC) and local streams.
    """
    stream = await page.evaluate_handle(stream_expr)
    try:
        result = await stream.evaluate(_MEASURE_JS, [stream_expr, seconds])
    finally:
        await stream.dispose()
    return ToneMeasurement(frequency=float(result["frequency"]), level_db=float(result["levelDb"]))


async def wait_for_tone(
    page: Page,
    frequency: float,
    *,
    within: float = 10.0,
    tolerance_hz: float = 15.0,
    stream_expr: str = "window.softphone.remoteStream",
) -> ToneMeasurement:
    """Measure again and again until the stream carries `frequency`; fail after `within` s.

    Audio starts some time after a call connects, and the stream may not exist yet: this
    waits for both instead of sleeping.
    """
    last: ToneMeasurement | str = "nothing"
    try:
        async with asyncio.timeout(within):
            while True:
                try:
                    last = await measure_remote_frequency(page, stream_expr, seconds=0.5)
                except PlaywrightError as error:  # e.g. the stream is still null
                    last = error.message.splitlines()[0]
                    await asyncio.sleep(0.1)
                    continue
                if not last.silent and math.isclose(
                    last.frequency, frequency, abs_tol=tolerance_hz
                ):
                    return last
    except TimeoutError:
        raise AssertionError(
            f"no {frequency} Hz tone in {stream_expr} within {within} s; last heard: {last}"
        ) from None
