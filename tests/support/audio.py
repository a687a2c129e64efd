"""Test tones: write them as WAV files, read recordings back, and find the tone in them."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]

# Bins below this are DC and rumble, never a test tone.
_LOWEST_TONE_HZ = 20.0
# RMS in int16 units under which a signal counts as silence (about -50 dBFS).
SILENCE_RMS = 100.0


def write_tone_wav(
    path: Path,
    frequency: float,
    seconds: float,
    sample_rate: int = 48000,
    channels: int = 1,
    amplitude: float = 0.3,
) -> Path:
    """Write a sine tone as a 16-bit PCM WAV (the same signal on every channel)."""
    if not 0.0 < amplitude <= 1.0:
        raise ValueError(f"amplitude must be in (0, 1], got {amplitude}")
    count = round(seconds * sample_rate)
    t = np.arange(count, dtype=np.float64) / sample_rate
    mono = np.round(amplitude * 32767.0 * np.sin(2.0 * np.pi * frequency * t)).astype("<i2")
    frames = np.repeat(mono[:, np.newaxis], channels, axis=1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(frames.tobytes())
    return path


def read_wav(path: Path) -> tuple[Samples, int]:
    """Read a 16-bit PCM WAV; several channels are averaged into one."""
    with wave.open(str(path), "rb") as src:
        if src.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit samples, got {8 * src.getsampwidth()}-bit")
        channels = src.getnchannels()
        rate = src.getframerate()
        raw = src.readframes(src.getnframes())
    interleaved = np.frombuffer(raw, dtype="<i2")
    # A file cut short while being written may end in a partial frame.
    interleaved = interleaved[: len(interleaved) - len(interleaved) % channels]
    if channels == 1:
        return interleaved.astype(np.int16), rate
    mono = interleaved.reshape(-1, channels).astype(np.int32).mean(axis=1)
    return np.round(mono).astype(np.int16), rate


def rms(samples: Samples) -> float:
    """Root mean square level in int16 units (0.0 for no samples)."""
    if len(samples) == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))


def dominant_frequency(samples: Samples, rate: int) -> float:
    """Frequency in Hz of the strongest spectral peak above 20 Hz.

    Hann window, then parabolic interpolation of the log magnitude around the peak bin,
    which places a pure tone within a fraction of a bin.
    """
    if len(samples) < 4:
        raise ValueError("need at least 4 samples")
    signal = samples.astype(np.float64)
    signal -= signal.mean()
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    bin_hz = rate / len(signal)
    first = max(1, int(np.ceil(_LOWEST_TONE_HZ / bin_hz)))
    if first >= len(spectrum) - 1:
        raise ValueError("too few samples to resolve any tone")
    peak = first + int(np.argmax(spectrum[first:]))
    offset = 0.0
    if first < peak < len(spectrum) - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2.0 * centre + right
        if denominator != 0.0:
            offset = float(0.5 * (left - right) / denominator)
    return (peak + offset) * bin_hz


def tone_present(
    samples: Samples,
    rate: int,
    frequency: float,
    tolerance_hz: float = 15.0,
    last_seconds: float = 1.0,
) -> bool:
    """True if the last `last_seconds` are not silence and peak within tolerance of `frequency`."""
    tail = samples[-max(4, round(last_seconds * rate)) :]
    if rms(tail) < SILENCE_RMS:
        return False
    return abs(dominant_frequency(tail, rate) - frequency) <= tolerance_hz
