"""Audio codecs of the media path: Opus, G.722, PCMU and PCMA, 20 ms frames, int16 mono.

Everything here is synchronous and runs on the per-packet path in the event loop, so it
avoids aiortc's codec classes (stereo 96 kbps Opus, a resampler per frame) and keeps one
PyAV codec context per direction alive for the whole call: Opus via ``libopus`` (mono,
48 kHz, 32 kbps, application ``voip``) and G.722 via FFmpeg's ``g722``. G.711 is two numpy
table lookups (:mod:`gateway.media.g711`); resampling is :mod:`gateway.media.resample`.

Decoders never raise on what the network sends: a payload that cannot be decoded gives an
empty array and increments ``errors``. Opus packet loss concealment goes through libopus
itself: a one-byte Opus packet (a TOC byte announcing one 20 ms frame of length zero) makes
libopus run its PLC for that frame (``opus_decode_frame`` treats a frame of 0 or 1 bytes as
lost), and PyAV passes it on as an ordinary packet. FFmpeg's own way, an empty packet, would
put the decoder into draining mode instead.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

import av
import av.error
import numpy as np
import numpy.typing as npt

from gateway.media import g711
from gateway.media.resample import Resampler

__all__ = [
    "CODEC_NAMES",
    "FRAME_MS",
    "AudioDecoder",
    "AudioEncoder",
    "Resampler",
    "ToneGenerator",
    "Transcoder",
    "UnsupportedCodec",
    "create_decoder",
    "create_encoder",
    "dominant_frequency",
    "frame_samples",
    "rtp_clock_rate_of",
    "sample_rate_of",
]

logger = logging.getLogger(__name__)

Int16Array = npt.NDArray[np.int16]
_AvCodec = Literal["libopus", "g722"]  # FFmpeg codec names; Literal picks PyAV's audio overload

CODEC_NAMES: Final = ("opus", "G722", "PCMU", "PCMA")
FRAME_MS: Final = 20

_SAMPLE_RATES: Final = {"opus": 48000, "G722": 16000, "PCMU": 8000, "PCMA": 8000}
# RFC 3551 section 4.5.2: G.722's RTP clock is 8000 although it samples at 16000.
_RTP_CLOCK_RATES: Final = {"opus": 48000, "G722": 8000, "PCMU": 8000, "PCMA": 8000}

OPUS_BITRATE: Final = 32000
# Before the first packet, conceal as CELT fullband 20 ms mono (libopus outputs silence).
_OPUS_DEFAULT_TOC: Final = 31 << 3
# libopus accepts these input rates directly, so X -> opus needs no resampler from them.
_OPUS_INPUT_RATES: Final = (8000, 12000, 16000, 24000, 48000)


class UnsupportedCodec(ValueError):
    """The codec name is not one of :data:`CODEC_NAMES` (matched case-insensitively)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unsupported audio codec {name!r}; expected one of {CODEC_NAMES}")
        self.name = name


def _canonical(name: str) -> str:
    for known in CODEC_NAMES:
        if known.lower() == name.lower():
            return known
    raise UnsupportedCodec(name)


def sample_rate_of(name: str) -> int:
    """PCM rate the codec works at."""
    return _SAMPLE_RATES[_canonical(name)]


def rtp_clock_rate_of(name: str) -> int:
    """RTP timestamp rate (differs from the sample rate for G.722)."""
    return _RTP_CLOCK_RATES[_canonical(name)]


def frame_samples(sample_rate: int) -> int:
    """Samples in one 20 ms frame."""
    return sample_rate * FRAME_MS // 1000


def _check_frame(pcm: Int16Array, expected: int) -> None:
    if pcm.dtype != np.int16 or pcm.ndim != 1 or pcm.size != expected:
        raise ValueError(
            f"expected {expected} int16 mono samples (20 ms), got shape {pcm.shape} {pcm.dtype}"
        )


def _to_mono_int16(frame: av.AudioFrame) -> Int16Array:
    data = frame.to_ndarray()
    fmt = frame.format
    channels = frame.layout.nb_channels
    if fmt.is_planar:
        samples = data.mean(axis=0) if channels > 1 else data[0]
    else:
        flat = data.reshape(-1)
        samples = flat.reshape(-1, channels).mean(axis=1) if channels > 1 else flat
    if samples.dtype == np.int16:
        mono: Int16Array = samples
        return mono
    if samples.dtype.kind == "f" and fmt.name.startswith(("flt", "dbl")):
        samples = samples * 32767.0
    out: Int16Array = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    return out


class AudioEncoder:
    """int16 mono 20 ms frames in, one RTP payload out."""

    def __init__(self, name: str, sample_rate: int) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate)

    def encode(self, pcm: Int16Array) -> bytes:
        raise NotImplementedError


class AudioDecoder:
    """RTP payloads in, int16 mono at ``sample_rate`` out; never raises on bad payloads."""

    def __init__(self, name: str, sample_rate: int) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples(sample_rate)
        self.errors = 0

    def decode(self, payload: bytes) -> Int16Array:
        raise NotImplementedError

    def conceal(self) -> Int16Array:
        """20 ms to play in place of a lost packet (silence unless the codec does better)."""
        return np.zeros(self.frame_samples, dtype=np.int16)

    def _reject(self, payload: bytes, reason: object) -> Int16Array:
        self.errors += 1
        logger.debug("%s: undecodable payload of %d bytes: %s", self.name, len(payload), reason)
        return np.zeros(0, dtype=np.int16)


class _G711Encoder(AudioEncoder):
    def __init__(self, name: str) -> None:
        super().__init__(name, 8000)
        self._encode = g711.ulaw_encode if name == "PCMU" else g711.alaw_encode

    def encode(self, pcm: Int16Array) -> bytes:
        _check_frame(pcm, self.frame_samples)
        return self._encode(pcm)


class _G711Decoder(AudioDecoder):
    def __init__(self, name: str) -> None:
        super().__init__(name, 8000)
        self._decode = g711.ulaw_decode if name == "PCMU" else g711.alaw_decode

    def decode(self, payload: bytes) -> Int16Array:
        if not payload:
            return self._reject(payload, "empty")
        return self._decode(payload)


class _AvEncoder(AudioEncoder):
    """A PyAV encoder context kept open for the whole stream."""

    def __init__(
        self, name: str, codec: _AvCodec, sample_rate: int, options: dict[str, str] | None = None
    ) -> None:
        super().__init__(name, sample_rate)
        ctx = av.CodecContext.create(codec, "w")
        ctx.sample_rate = sample_rate
        ctx.format = "s16"
        ctx.layout = "mono"
        if codec == "libopus":
            ctx.bit_rate = OPUS_BITRATE
        if options:
            ctx.options = options
        ctx.open()
        self._ctx = ctx
        self._pts = 0

    def encode(self, pcm: Int16Array) -> bytes:
        _check_frame(pcm, self.frame_samples)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += pcm.size
        packets = self._ctx.encode(frame)
        if len(packets) == 1:
            return bytes(packets[0])
        # Neither libopus nor g722 buffers whole frames, but be correct if one ever does.
        return b"".join(bytes(p) for p in packets)


class _AvDecoder(AudioDecoder):
    def __init__(self, name: str, codec: _AvCodec, sample_rate: int) -> None:
        super().__init__(name, sample_rate)
        ctx = av.CodecContext.create(codec, "r")
        ctx.sample_rate = sample_rate
        # A mono decoder: libopus downmixes stereo streams itself (opus/48000/2 from browsers).
        ctx.layout = "mono"
        ctx.open()
        self._ctx = ctx

    def decode(self, payload: bytes) -> Int16Array:
        # An empty packet would put the FFmpeg decoder into draining mode: never send one.
        if not payload:
            return self._reject(payload, "empty")
        return self._decode_packet(payload)

    def _decode_packet(self, payload: bytes) -> Int16Array:
        try:
            frames = self._ctx.decode(av.Packet(payload))
        except (av.error.FFmpegError, ValueError) as exc:
            return self._reject(payload, exc)
        if len(frames) == 1:
            return _to_mono_int16(frames[0])
        if not frames:
            return self._reject(payload, "no audio")
        return np.concatenate([_to_mono_int16(f) for f in frames])


class _OpusDecoder(_AvDecoder):
    def __init__(self) -> None:
        super().__init__("opus", "libopus", 48000)
        self._last_toc = _OPUS_DEFAULT_TOC

    def decode(self, payload: bytes) -> Int16Array:
        pcm = super().decode(payload)
        if pcm.size:
            self._last_toc = payload[0]
        return pcm

    def conceal(self) -> Int16Array:
        pcm = self._decode_packet(bytes([_opus_plc_toc(self._last_toc)]))
        if pcm.size == self.frame_samples:
            return pcm
        return super().conceal()


def _opus_plc_toc(toc: int) -> int:
    """The TOC byte of a one-frame 20 ms packet in the same mode, bandwidth and channels.

    libopus takes the bandwidth (SILK's internal rate) and channel count from the TOC even
    when it conceals, so keeping them avoids a glitch; only the duration is forced to 20 ms.
    """
    config = toc >> 3
    if config < 12:  # SILK-only: NB/MB/WB x 10/20/40/60 ms
        config = (config & ~3) | 1
    elif config < 16:  # Hybrid: SWB/FB x 10/20 ms
        config = (config & ~1) | 1
    else:  # CELT-only: NB/WB/SWB/FB x 2.5/5/10/20 ms
        config = (config & ~3) | 3
    return (config << 3) | (toc & 0x04)


def _opus_encoder(sample_rate: int = 48000) -> _AvEncoder:
    options = {"application": "voip", "frame_duration": str(FRAME_MS)}
    return _AvEncoder("opus", "libopus", sample_rate, options)


def create_encoder(name: str) -> AudioEncoder:
    codec = _canonical(name)
    if codec == "opus":
        return _opus_encoder()
    if codec == "G722":
        return _AvEncoder("G722", "g722", 16000)
    return _G711Encoder(codec)


def create_decoder(name: str) -> AudioDecoder:
    codec = _canonical(name)
    if codec == "opus":
        return _OpusDecoder()
    if codec == "G722":
        return _AvDecoder("G722", "g722", 16000)
    return _G711Decoder(codec)


class Transcoder:
    """One direction of one call: ``src`` payloads in, ``dst`` 20 ms payloads out.

    Normally one payload in gives one out. Inputs of another duration (a 30 ms PCMU
    packet, a 60 ms Opus packet) are buffered and cut into 20 ms frames, so a call may
    return zero, one or several payloads.
    """

    def __init__(self, src: str, dst: str) -> None:
        self.src = _canonical(src)
        self.dst = _canonical(dst)
        self._decoder = create_decoder(self.src)
        rate_in = self._decoder.sample_rate
        if self.dst == "opus" and rate_in in _OPUS_INPUT_RATES:
            # libopus encodes 8/16 kHz input natively: cheaper and better than resampling
            # narrowband audio up to 48 kHz first. The packets are ordinary Opus packets.
            self._encoder: AudioEncoder = _opus_encoder(rate_in)
        else:
            self._encoder = create_encoder(self.dst)
        self._resampler = Resampler(rate_in, self._encoder.sample_rate)
        self._frame = self._encoder.frame_samples
        self._pending: Int16Array = np.zeros(0, dtype=np.int16)

    @property
    def errors(self) -> int:
        """Undecodable input payloads so far."""
        return self._decoder.errors

    def transcode(self, payload: bytes) -> list[bytes]:
        pcm = self._decoder.decode(payload)
        if pcm.size == 0:
            return []
        return self._push(self._resampler.process(pcm))

    def conceal(self) -> list[bytes]:
        return self._push(self._resampler.process(self._decoder.conceal()))

    def _push(self, pcm: Int16Array) -> list[bytes]:
        if self._pending.size == 0 and pcm.size == self._frame:
            return [self._encoder.encode(pcm)]
        if self._pending.size:
            pcm = np.concatenate((self._pending, pcm))
        out: list[bytes] = []
        start = 0
        while pcm.size - start >= self._frame:
            out.append(self._encoder.encode(pcm[start : start + self._frame]))
            start += self._frame
        self._pending = pcm[start:].copy()
        return out


class ToneGenerator:
    """A continuous sine in 20 ms int16 frames; phase carries over between frames."""

    def __init__(self, frequency: float, sample_rate: int, amplitude: float = 0.3) -> None:
        if not 0.0 <= amplitude <= 1.0:
            raise ValueError(f"amplitude must be within [0, 1], got {amplitude}")
        self.frequency = frequency
        self.sample_rate = sample_rate
        self._scale = amplitude * 32767.0
        self._step = 2.0 * np.pi * frequency / sample_rate
        self._ramp = np.arange(frame_samples(sample_rate), dtype=np.float64) * self._step
        self._phase = 0.0

    def next_frame(self) -> Int16Array:
        samples = np.sin(self._ramp + self._phase) * self._scale
        # Keep the phase small so float precision does not drift over hours of tone.
        self._phase = float((self._phase + self._ramp.size * self._step) % (2.0 * np.pi))
        out: Int16Array = np.rint(samples).astype(np.int16)
        return out


def dominant_frequency(pcm: npt.NDArray[np.generic], sample_rate: int) -> float:
    """Frequency of the strongest spectral peak (Hann window, parabolic interpolation).

    Returns 0.0 for input that is empty, silent or whose peak is at DC.
    """
    samples = np.asarray(pcm, dtype=np.float64).reshape(-1)
    if samples.size < 4:
        return 0.0
    samples = samples - samples.mean()
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    peak = int(np.argmax(spectrum[1:])) + 1
    if spectrum[peak] <= 0.0:
        return 0.0
    offset = 0.0
    if peak + 1 < spectrum.size:
        # Parabola through the log magnitudes of the peak and its neighbours.
        a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = a - 2.0 * b + c
        if denominator < 0.0:
            offset = float(0.5 * (a - c) / denominator)
    return float((peak + offset) * sample_rate / samples.size)
