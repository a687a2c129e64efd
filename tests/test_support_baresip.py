"""Two real baresip phones call each other on loopback; each must hear the other's tone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.audio import dominant_frequency, read_wav, rms, write_tone_wav
from tests.support.baresip import BaresipError, BaresipPhone, baresip_available

pytestmark = [
    pytest.mark.baresip,
    pytest.mark.skipif(
        not baresip_available(), reason="baresip not installed (Debian package baresip-core)"
    ),
]

CALL_SECONDS = 3.0


async def test_two_phones_hear_each_other(tmp_path: Path) -> None:
    # The tone files outlast the call: aufile ends the call when its file ends.
    tone_a = write_tone_wav(tmp_path / "a.wav", 440, CALL_SECONDS + 20, sample_rate=8000)
    tone_b = write_tone_wav(tmp_path / "b.wav", 1000, CALL_SECONDS + 20, sample_rate=8000)
    async with (
        BaresipPhone(tone_wav=tone_a, record_dir=tmp_path / "rec-a") as phone_a,
        BaresipPhone(tone_wav=tone_b, record_dir=tmp_path / "rec-b", user="bob") as phone_b,
    ):
        assert phone_b.uri == f"sip:bob@127.0.0.1:{phone_b.sip_port}"
        await phone_a.dial(phone_b.uri)
        established_a = await phone_a.wait_event("CALL_ESTABLISHED", timeout=5)
        established_b = await phone_b.wait_event("CALL_ESTABLISHED", timeout=5)
        assert established_a["direction"] == "outgoing"
        assert established_a["peeruri"] == phone_b.uri
        assert established_b["direction"] == "incoming"
        assert established_b["peeruri"] == phone_a.uri

        # Let media flow for the length of the call: a duration, not a condition.
        await asyncio.sleep(CALL_SECONDS)
        await phone_a.hangup()
        closed_a = await phone_a.wait_event("CALL_CLOSED", timeout=5)
        closed_b = await phone_b.wait_event("CALL_CLOSED", timeout=5)
        assert "reset by user" in closed_a["param"]
        assert "reset by peer" in closed_b["param"]

        heard_by_a = await phone_a.wait_recordings_closed()
        heard_by_b = await phone_b.wait_recordings_closed()
        assert len(heard_by_a) == len(heard_by_b) == 1
        samples_a, rate_a = read_wav(heard_by_a[0])
        samples_b, rate_b = read_wav(heard_by_b[0])
        assert rate_a == rate_b == 8000  # PCMU
        assert len(samples_a) / rate_a > CALL_SECONDS - 1
        assert rms(samples_a) > 3000 and rms(samples_b) > 3000
        assert dominant_frequency(samples_a, rate_a) == pytest.approx(1000, abs=5)
        assert dominant_frequency(samples_b, rate_b) == pytest.approx(440, abs=5)

        # The -enc files hold what each phone sent: its own tone.
        (sent_by_a,) = phone_a.sent_recordings()
        assert dominant_frequency(*read_wav(sent_by_a)) == pytest.approx(440, abs=5)

        types_b = phone_b.event_types()
        call_events = [t for t in types_b if t in _MILESTONES]
        # baresip 1.0.0 sends no CALL_INCOMING for a call it answers by itself.
        assert call_events == ["CALL_ESTABLISHED", "CALL_CLOSED"]


_MILESTONES = {"CALL_INCOMING", "CALL_RINGING", "CALL_ESTABLISHED", "CALL_CLOSED"}


async def test_resamples_tone_to_codec_rate(tmp_path: Path) -> None:
    """A 48 kHz stereo tone file still works with an 8 kHz codec, and PCMA can be chosen."""
    tone_a = write_tone_wav(tmp_path / "a.wav", 700, 20, sample_rate=48000, channels=2)
    tone_b = write_tone_wav(tmp_path / "b.wav", 1200, 20, sample_rate=8000)
    async with (
        BaresipPhone(tone_wav=tone_a, codecs=["PCMA/8000/1"]) as phone_a,
        BaresipPhone(tone_wav=tone_b, codecs=["PCMA/8000/1"]) as phone_b,
    ):
        await phone_a.dial(phone_b.uri)
        await phone_b.wait_event("CALL_ESTABLISHED", timeout=5)
        await asyncio.sleep(1.5)
        await phone_b.hangup()
        await phone_a.wait_event("CALL_CLOSED", timeout=5)
        (heard_by_b,) = await phone_b.wait_recordings_closed()
        samples, rate = read_wav(heard_by_b)
        assert rate == 8000
        assert dominant_frequency(samples, rate) == pytest.approx(700, abs=5)


async def test_manual_answer_and_failed_command(tmp_path: Path) -> None:
    tone = write_tone_wav(tmp_path / "t.wav", 500, 20, sample_rate=8000)
    async with (
        BaresipPhone(tone_wav=tone) as caller,
        BaresipPhone(tone_wav=tone, auto_answer=False) as callee,
    ):
        config_dir = callee.log_path.parent
        with pytest.raises(BaresipError, match="no-such-command"):
            await caller.command("no-such-command")
        await caller.dial(callee.uri)
        await callee.wait_event("CALL_INCOMING", timeout=5)
        await caller.wait_event("CALL_RINGING", timeout=5)
        # Not answered yet: the caller must not be established.
        assert "CALL_ESTABLISHED" not in caller.event_types()
        await callee.answer()
        await caller.wait_event("CALL_ESTABLISHED", timeout=5)
        await callee.hangup()
        await caller.wait_event("CALL_CLOSED", timeout=5)
    # The phone's own temporary directory is gone once it stopped.
    assert not config_dir.exists()
