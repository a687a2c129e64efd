"""What one benchmark call sends: RTP packets every 20 ms with a send time in the payload.

PCMU passthrough: the payload crosses the gateway and sipp's echo byte for byte, so its
first bytes carry the send time (time.monotonic_ns, comparable across processes on
Linux) and the call's own sequence number; the rest is mu-law silence.

Opus (transcoded): the payload must be real Opus, so it is a pre-encoded tone, and a
packet that comes back is matched to the one sent by its RTP timestamp: the gateway
re-bases timestamps per direction and emits one 20 ms frame per frame in, so the k-th
frame back answers the k-th frame sent (an estimate: loss at the start shifts it).
"""

from __future__ import annotations

import struct
from fractions import Fraction
from typing import Final

import av
import numpy as np

FRAME_MS: Final = 20
PCMU_PAYLOAD: Final = 160
STAMP = struct.Struct("!QI")  # send time (ns), our sequence number
RTP_HEADER = struct.Struct("!BBHII")
_PCMU_SILENCE: Final = b"\xff" * (PCMU_PAYLOAD - STAMP.size)


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes) -> bytes:
    return RTP_HEADER.pack(0x80, pt & 0x7F, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def pcmu_payload(send_ns: int, seq: int) -> bytes:
    return STAMP.pack(send_ns, seq) + _PCMU_SILENCE


def rtp_payload_offset(packet: bytes) -> int:
    """Where the payload starts (after CSRCs and a header extension), or -1 if malformed."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if len(packet) < offset + 4:
            return -1
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    return offset if offset <= len(packet) else -1


def opus_frames(count: int = 50, frequency: float = 440.0) -> list[bytes]:
    """`count` 20 ms mono Opus frames of a tone, encoded once and replayed in a loop."""
    rate = 48000
    samples = rate * FRAME_MS // 1000
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = rate
    encoder.layout = "mono"
    encoder.format = av.AudioFormat("s16")
    encoder.bit_rate = 32000
    encoder.time_base = Fraction(1, rate)
    frames: list[bytes] = []
    t = np.arange(samples * (count + 4)) / rate
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
    for index in range(count + 4):
        frame = av.AudioFrame.from_ndarray(
            pcm[index * samples : (index + 1) * samples].reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = rate
        frame.pts = index * samples
        frames.extend(bytes(p) for p in encoder.encode(frame))
    return frames[:count]
