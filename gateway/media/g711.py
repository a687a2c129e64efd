"""G.711 mu-law (PCMU) and A-law (PCMA) by table lookup.

The tables are built once at import with the arithmetic of the ITU-T G.191 reference
implementation (STL ``g711.c``: ``ulaw_compress``/``alaw_compress`` and their ``expand``
counterparts), vectorised over every 16-bit input. Negative samples use the one's complement,
as the reference does, so small negative values round towards zero like it. After that, a
20 ms frame costs one fancy-indexing call each way.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    lin = np.arange(-32768, 32768, dtype=np.int32)
    # G.191: 14-bit magnitude plus the bias of 33, clipped to 13 bits.
    absno = np.where(lin < 0, (~lin) >> 2, lin >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    # segno = 1 + number of significant bits of (absno >> 6), i.e. 1..8.
    segno = np.ones_like(absno)
    i = absno >> 6
    while np.any(i):
        segno += i != 0
        i >>= 1
    high_nibble = 0x08 - segno
    low_nibble = 0x0F - ((absno >> segno) & 0x0F)
    code = (high_nibble << 4) | low_nibble
    code = np.where(lin >= 0, code | 0x80, code)
    table: npt.NDArray[np.uint8] = code.astype(np.uint8)
    return table


def _build_ulaw_decode() -> Int16Array:
    log = np.arange(256, dtype=np.int32)
    sign = np.where(log < 0x80, -1, 1)
    mantissa = ~log
    exponent = (mantissa >> 4) & 0x07
    segment = exponent + 1
    mantissa &= 0x0F
    step = 4 << segment
    lin = sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)
    table: Int16Array = lin.astype(np.int16)
    return table


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    lin = np.arange(-32768, 32768, dtype=np.int32)
    # G.191: 12-bit magnitude, one's complement for negative values.
    ix = np.where(lin < 0, (~lin) >> 4, lin >> 4)
    # Segment (exponent) 0 and 1 share the step; above 31 each doubling is one segment.
    iexp = np.zeros_like(ix)
    big = ix > 15
    iexp[big] = 1
    shifted = ix.copy()
    while True:
        more = shifted > 16 + 15
        if not np.any(more):
            break
        shifted[more] >>= 1
        iexp[more] += 1
    code = np.where(big, (shifted - 16) + (iexp << 4), ix)
    code = np.where(lin >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def _build_alaw_decode() -> Int16Array:
    log = np.arange(256, dtype=np.int32)
    ix = (log ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    mant = np.where(iexp > 0, mant + 16, mant)
    mant = (mant << 4) + 0x08
    mant = np.where(iexp > 1, mant << np.maximum(iexp - 1, 0), mant)
    lin = np.where(log > 127, mant, -mant)
    return lin.astype(np.int16)


# Encode tables are indexed by sample + 32768 (the "16-bit sample offset").
ULAW_ENCODE: Final = _build_ulaw_encode()
ULAW_DECODE: Final = _build_ulaw_decode()
ALAW_ENCODE: Final = _build_alaw_encode()
ALAW_DECODE: Final = _build_alaw_decode()
for _table in (ULAW_ENCODE, ULAW_DECODE, ALAW_ENCODE, ALAW_DECODE):
    _table.setflags(write=False)


def _offsets(pcm: Int16Array) -> npt.NDArray[np.uint16]:
    # Reinterpreting int16 as uint16 and flipping the sign bit adds 32768 without a copy
    # into a wider type: one allocation for the index array.
    return pcm.view(np.uint16) ^ np.uint16(0x8000)


def ulaw_encode(pcm: Int16Array) -> bytes:
    return ULAW_ENCODE[_offsets(pcm)].tobytes()


def alaw_encode(pcm: Int16Array) -> bytes:
    return ALAW_ENCODE[_offsets(pcm)].tobytes()


def ulaw_decode(payload: bytes) -> Int16Array:
    return ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes) -> Int16Array:
    return ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
