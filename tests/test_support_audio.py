"""The tone helpers: what write_tone_wav writes, read_wav must read back and analyse."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from tests.support.audio import dominant_frequency, read_wav, rms, tone_present, write_tone_wav


def test_written_tone_reads_back_with_its_format(tmp_path: Path) -> None:
    path = write_tone_wav(tmp_path / "t.wav", 1000, 0.5, sample_rate=16000, amplitude=0.5)
    with wave.open(str(path), "rb") as src:
        assert (src.getnchannels(), src.getsampwidth(), src.getframerate()) == (1, 2, 16000)
        assert src.getnframes() == 8000
    samples, rate = read_wav(path)
    assert rate == 16000
    assert samples.dtype == np.int16 and len(samples) == 8000
    assert int(np.abs(samples).max()) == pytest.approx(0.5 * 32767, rel=0.01)
    assert rms(samples) == pytest.approx(0.5 * 32767 / np.sqrt(2), rel=0.01)


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    path = write_tone_wav(tmp_path / "s.wav", 440, 0.25, sample_rate=48000, channels=2)
    samples, rate = read_wav(path)
    assert rate == 48000 and samples.ndim == 1 and len(samples) == 12000
    assert dominant_frequency(samples, rate) == pytest.approx(440, abs=1)


@pytest.mark.parametrize("frequency", [300.0, 440.0, 1000.0, 1234.5, 3400.0])
def test_dominant_frequency_is_finer_than_a_bin(tmp_path: Path, frequency: float) -> None:
    # 0.1 s at 8 kHz gives 10 Hz bins; interpolation must do much better than that.
    path = write_tone_wav(tmp_path / "t.wav", frequency, 0.1, sample_rate=8000)
    samples, rate = read_wav(path)
    assert dominant_frequency(samples, rate) == pytest.approx(frequency, abs=2)


def test_dc_offset_is_not_a_tone() -> None:
    rate = 8000
    t = np.arange(rate) / rate
    signal = (8000 + 2000 * np.sin(2 * np.pi * 250 * t)).astype(np.int16)
    assert dominant_frequency(signal, rate) == pytest.approx(250, abs=1)


def test_tone_present_needs_the_right_tone_and_no_silence(tmp_path: Path) -> None:
    samples, rate = read_wav(write_tone_wav(tmp_path / "t.wav", 1000, 2, sample_rate=8000))
    assert tone_present(samples, rate, 1000)
    assert tone_present(samples, rate, 1010, tolerance_hz=15)
    assert not tone_present(samples, rate, 440)
    # The tone followed by a second of silence: only the last second counts.
    trailing_silence = np.concatenate([samples, np.zeros(rate, dtype=np.int16)])
    assert not tone_present(trailing_silence, rate, 1000)
    assert tone_present(trailing_silence, rate, 1000, last_seconds=3)
    quiet = write_tone_wav(tmp_path / "q.wav", 1000, 1, sample_rate=8000, amplitude=0.001)
    assert not tone_present(*read_wav(quiet), 1000)
