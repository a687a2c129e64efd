"""Audio codec layer: G.711 tables, Opus/G.722 via PyAV, resampling, transcoding, tones."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable

import av
import numpy as np
import numpy.typing as npt
import pytest

from gateway.media import codecs, g711
from gateway.media.codecs import (
    CODEC_NAMES,
    Resampler,
    ToneGenerator,
    Transcoder,
    UnsupportedCodec,
    create_decoder,
    create_encoder,
    dominant_frequency,
    rtp_clock_rate_of,
    sample_rate_of,
)

Int16Array = npt.NDArray[np.int16]
FULL_SCALE = 32767.0
WARMUP_FRAMES = 10  # codec and filter start-up transients are ignored when measuring


def tone_frames(
    frequency: float, rate: int, count: int, amplitude: float = 0.3
) -> list[Int16Array]:
    gen = ToneGenerator(frequency, rate, amplitude)
    return [gen.next_frame() for _ in range(count)]


def rms(pcm: npt.NDArray[np.generic]) -> float:
    return float(np.sqrt(np.mean(np.asarray(pcm, dtype=np.float64) ** 2)))


def assert_frequency(pcm: Int16Array, rate: int, expected: float) -> None:
    measured = dominant_frequency(pcm, rate)
    assert measured == pytest.approx(expected, rel=0.01), f"{measured:.1f} Hz != {expected} Hz"


# --- names and rates ---------------------------------------------------------------------


def test_names_and_rates() -> None:
    assert CODEC_NAMES == ("opus", "G722", "PCMU", "PCMA")
    assert [sample_rate_of(n) for n in CODEC_NAMES] == [48000, 16000, 8000, 8000]
    # RFC 3551: G.722's RTP clock runs at 8000 although it samples at 16000.
    assert [rtp_clock_rate_of(n) for n in CODEC_NAMES] == [48000, 8000, 8000, 8000]
    assert sample_rate_of("pcmu") == 8000  # SDP codec names are case-insensitive
    assert create_encoder("OPUS").name == "opus"


@pytest.mark.parametrize("factory", [create_encoder, create_decoder, sample_rate_of])
def test_unknown_codec_is_a_typed_value_error(factory: Callable[[str], object]) -> None:
    with pytest.raises(UnsupportedCodec) as info:
        factory("G729")
    assert isinstance(info.value, ValueError)
    assert info.value.name == "G729"
    with pytest.raises(UnsupportedCodec):
        Transcoder("PCMU", "telephone-event")


# --- G.711 against the ITU-T reference -----------------------------------------------------

# (linear input, code) pairs computed with ITU-T G.191 (STL) ulaw_compress / alaw_compress;
# negative inputs use the one's complement there, so -1 encodes as negative zero.
ULAW_ENCODE_POINTS = [
    (0, 0xFF),
    (-1, 0x7F),
    (1000, 0xCE),
    (-1000, 0x4E),
    (32767, 0x80),
    (-32768, 0x00),
]
ULAW_DECODE_POINTS = [(0xFF, 0), (0x7F, 0), (0xCE, 988), (0x80, 32124), (0x00, -32124)]
ALAW_ENCODE_POINTS = [
    (0, 0xD5),
    (-1, 0x55),
    (1000, 0xFA),
    (-1000, 0x7A),
    (32767, 0xAA),
    (-32768, 0x2A),
]
ALAW_DECODE_POINTS = [(0xD5, 8), (0x55, -8), (0xFA, 1008), (0xAA, 32256), (0x2A, -32256)]


def test_g711_reference_points() -> None:
    for sample, code in ULAW_ENCODE_POINTS:
        assert g711.ULAW_ENCODE[sample + 32768] == code, sample
    for code, sample in ULAW_DECODE_POINTS:
        assert g711.ULAW_DECODE[code] == sample, hex(code)
    for sample, code in ALAW_ENCODE_POINTS:
        assert g711.ALAW_ENCODE[sample + 32768] == code, sample
    for code, sample in ALAW_DECODE_POINTS:
        assert g711.ALAW_DECODE[code] == sample, hex(code)
    # Through the public encoder and decoder too.
    pcmu = create_encoder("PCMU").encode(np.zeros(160, dtype=np.int16))
    assert pcmu == b"\xff" * 160
    pcma = create_encoder("PCMA").encode(np.zeros(160, dtype=np.int16))
    assert pcma == b"\xd5" * 160
    decoded = create_decoder("PCMA").decode(bytes([0xD5, 0x55, 0xAA, 0x2A]))
    assert decoded.tolist() == [8, -8, 32256, -32256]


def test_g711_tables_are_consistent_and_audioop_free() -> None:
    assert g711.ULAW_ENCODE.shape == (65536,) and g711.ALAW_ENCODE.shape == (65536,)
    assert g711.ULAW_DECODE.shape == (256,) and g711.ALAW_DECODE.shape == (256,)
    assert "audioop" not in inspect.getsource(g711)
    assert "audioop" not in inspect.getsource(codecs)
    everything = np.arange(-32768, 32768)
    for encode, decode in [
        (g711.ULAW_ENCODE, g711.ULAW_DECODE),
        (g711.ALAW_ENCODE, g711.ALAW_DECODE),
    ]:
        # Companding is monotonic and every code decodes to a value that encodes back to it
        # (mu-law's negative zero 0x7F is the one code whose value, 0, encodes as 0xFF).
        levels = decode[encode].astype(np.int64)
        assert np.all(np.diff(levels) >= 0)
        codes = np.arange(256)
        back = encode[decode.astype(np.int64) + 32768]
        mismatched = set(codes[back != codes].tolist())
        assert mismatched <= {0x7F}
        # Quantisation error stays within the largest step (1024 for mu-law's top segment).
        assert np.max(np.abs(levels - everything)) <= 1024


# --- round trips through every codec --------------------------------------------------------


@pytest.mark.parametrize("frequency", [1000.0, 440.0])
@pytest.mark.parametrize("name", CODEC_NAMES)
def test_tone_round_trip(name: str, frequency: float) -> None:
    rate = sample_rate_of(name)
    encoder, decoder = create_encoder(name), create_decoder(name)
    assert encoder.sample_rate == decoder.sample_rate == rate
    assert encoder.name == decoder.name == name
    frames = tone_frames(frequency, rate, 50)
    decoded = []
    for frame in frames:
        payload = encoder.encode(frame)
        assert payload
        pcm = decoder.decode(payload)
        assert pcm.dtype == np.int16 and pcm.shape == (rate // 50,)
        decoded.append(pcm)
    out = np.concatenate(decoded[WARMUP_FRAMES:])
    assert_frequency(out, rate, frequency)
    reference = np.concatenate(frames[WARMUP_FRAMES:])
    assert rms(out) == pytest.approx(rms(reference), rel=0.1)
    assert decoder.errors == 0


def test_payload_sizes() -> None:
    sizes = {}
    for name in CODEC_NAMES:
        encoder = create_encoder(name)
        frames = tone_frames(440.0, encoder.sample_rate, 20)
        sizes[name] = [len(encoder.encode(f)) for f in frames]
    assert set(sizes["PCMU"]) == set(sizes["PCMA"]) == {160}
    assert set(sizes["G722"]) == {160}  # 64 kbit/s
    # ~32 kbit/s VBR Opus: on average 80 bytes, well under aiortc's 96 kbit/s stereo.
    assert 20 <= np.mean(sizes["opus"]) <= 160


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_encoder_rejects_wrong_frames(name: str) -> None:
    encoder = create_encoder(name)
    samples = encoder.sample_rate // 50
    for bad in [
        np.zeros(samples - 1, dtype=np.int16),
        np.zeros(samples * 2, dtype=np.int16),
        np.zeros(samples, dtype=np.float32),
        np.zeros((1, samples), dtype=np.int16),
    ]:
        with pytest.raises(ValueError):
            encoder.encode(bad)  # type: ignore[arg-type]
    # Still usable afterwards.
    assert encoder.encode(np.zeros(samples, dtype=np.int16))


def _stereo_opus_packets(left: list[Int16Array], right: list[Int16Array]) -> list[bytes]:
    """Opus as a browser may send it: opus/48000/2 with real stereo content."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = 48000
    ctx.format = "s16"
    ctx.layout = "stereo"
    ctx.bit_rate = 96000
    ctx.open()
    packets: list[bytes] = []
    for index, (lch, rch) in enumerate(zip(left, right, strict=True)):
        interleaved = np.stack((lch, rch), axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = index * 960
        packets.extend(bytes(p) for p in ctx.encode(frame))
    return packets


def test_opus_stereo_stream_decodes_to_mono() -> None:
    tone = tone_frames(440.0, 48000, 40)
    silence = [np.zeros(960, dtype=np.int16)] * 40
    packets = _stereo_opus_packets(tone, silence)
    assert all(p[0] & 0x04 for p in packets), "the test stream must be flagged stereo"
    decoder = create_decoder("opus")
    decoded = [decoder.decode(p) for p in packets]
    assert all(pcm.shape == (960,) and pcm.dtype == np.int16 for pcm in decoded)
    out = np.concatenate(decoded[WARMUP_FRAMES:])
    assert_frequency(out, 48000, 440.0)
    # Downmix averages the channels: a tone on the left only comes out at half level.
    assert rms(out) == pytest.approx(rms(np.concatenate(tone)) / 2, rel=0.15)


def test_opus_conceal_continues_the_signal() -> None:
    encoder, decoder = create_encoder("opus"), create_decoder("opus")
    fresh = decoder.conceal()
    assert fresh.shape == (960,) and fresh.dtype == np.int16
    for frame in tone_frames(440.0, 48000, 25):
        decoder.decode(encoder.encode(frame))
    concealed = decoder.conceal()
    assert concealed.shape == (960,)
    # libopus PLC extrapolates the tone rather than going silent.
    assert rms(concealed) > 0.2 * 0.3 * FULL_SCALE
    # Decoding goes on normally after a concealed frame.
    after = decoder.decode(encoder.encode(ToneGenerator(440.0, 48000).next_frame()))
    assert after.shape == (960,)
    assert decoder.errors == 0


@pytest.mark.parametrize("name", ["G722", "PCMU", "PCMA"])
def test_conceal_is_silence_without_plc(name: str) -> None:
    decoder = create_decoder(name)
    concealed = decoder.conceal()
    assert concealed.shape == (decoder.sample_rate // 50,)
    assert not concealed.any()


GARBAGE = [
    b"",
    b"\xff",
    b"\xff\xff\xff\xff",  # Opus code 3 with an impossible frame count
    b"\x03\x00",  # Opus code 3 missing its count byte's frames
    bytes(range(256)) * 6,
]


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_garbage_payloads_never_raise(name: str) -> None:
    decoder = create_decoder(name)
    assert decoder.decode(b"").size == 0
    assert decoder.errors == 1
    rng = np.random.default_rng(7)
    payloads = GARBAGE + [rng.bytes(int(n)) for n in rng.integers(0, 400, size=300)]
    for payload in payloads:
        pcm = decoder.decode(payload)
        assert pcm.dtype == np.int16 and pcm.ndim == 1
    if name == "opus":
        assert decoder.decode(b"\xff\xff\xff\xff").size == 0
    # The decoder still works on good input afterwards.
    good = create_encoder(name).encode(tone_frames(440.0, decoder.sample_rate, 1)[0])
    assert decoder.decode(good).size == decoder.sample_rate // 50


# --- transcoding --------------------------------------------------------------------------


PAIRS = [(s, d) for s, d in itertools.product(CODEC_NAMES, CODEC_NAMES) if s != d]


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{s}-{d}" for s, d in PAIRS])
def test_transcoder_keeps_tone_frequency(src: str, dst: str) -> None:
    source_encoder = create_encoder(src)
    transcoder = Transcoder(src, dst)
    check_decoder = create_decoder(dst)
    decoded = []
    for frame in tone_frames(440.0, sample_rate_of(src), 50):
        outputs = transcoder.transcode(source_encoder.encode(frame))
        assert len(outputs) == 1, "20 ms in must give exactly one 20 ms payload out"
        pcm = check_decoder.decode(outputs[0])
        assert pcm.shape == (sample_rate_of(dst) // 50,)
        decoded.append(pcm)
    out = np.concatenate(decoded[WARMUP_FRAMES:])
    assert_frequency(out, sample_rate_of(dst), 440.0)
    assert rms(out) == pytest.approx(0.3 * FULL_SCALE / np.sqrt(2), rel=0.2)
    assert transcoder.errors == 0 and check_decoder.errors == 0


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{s}-{d}" for s, d in PAIRS])
def test_transcoder_garbage_and_loss(src: str, dst: str) -> None:
    transcoder = Transcoder(src, dst)
    assert transcoder.transcode(b"") == []
    assert transcoder.errors == 1
    rng = np.random.default_rng(3)
    for payload in GARBAGE + [rng.bytes(int(n)) for n in rng.integers(1, 300, size=50)]:
        for out in transcoder.transcode(payload):
            assert isinstance(out, bytes) and out
    if src == "opus":
        assert transcoder.transcode(b"\xff\xff\xff\xff") == []
    # Each concealed loss yields one 20 ms payload of the output codec (whatever partial
    # frame the odd-sized garbage left pending stays below 20 ms).
    concealed = [p for _ in range(3) for p in transcoder.conceal()]
    assert len(concealed) == 3
    assert create_decoder(dst).decode(concealed[-1]).size == sample_rate_of(dst) // 50


def test_transcoder_repacketises_30ms_input() -> None:
    # Some SIP peers send ptime 30: 240-byte PCMU packets.
    signal = np.concatenate(tone_frames(440.0, 8000, 30))  # 600 ms
    transcoder = Transcoder("PCMU", "opus")
    decoder = create_decoder("opus")
    outputs: list[bytes] = []
    counts = []
    for start in range(0, signal.size, 240):
        # encode() insists on 20 ms, so build the 30 ms payloads with the table directly.
        payload = g711.ulaw_encode(signal[start : start + 240])
        assert len(payload) == 240
        produced = transcoder.transcode(payload)
        counts.append(len(produced))
        outputs.extend(produced)
    assert counts[:4] == [1, 2, 1, 2]  # 30 ms in: alternately one and two 20 ms frames out
    assert len(outputs) == 30
    out = np.concatenate([decoder.decode(p) for p in outputs][WARMUP_FRAMES:])
    assert_frequency(out, 48000, 440.0)


# --- resampling ---------------------------------------------------------------------------


RATE_PAIRS = [
    (8000, 48000),
    (48000, 8000),
    (16000, 48000),
    (48000, 16000),
    (8000, 16000),
    (16000, 8000),
]


@pytest.mark.parametrize("frequency", [440.0, 1000.0])
@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_resampler_keeps_frequency_and_is_continuous(src: int, dst: int, frequency: float) -> None:
    resampler = Resampler(src, dst)
    pieces = []
    for frame in tone_frames(frequency, src, 50):
        out = resampler.process(frame)
        assert out.dtype == np.int16 and out.shape == (dst // 50,)
        pieces.append(out)
    steady = np.concatenate(pieces[WARMUP_FRAMES:])
    assert_frequency(steady, dst, frequency)
    assert rms(steady) == pytest.approx(0.3 * FULL_SCALE / np.sqrt(2), rel=0.05)
    # A sine's largest step between samples is A * 2 * pi * f / rate; a click at a frame
    # boundary would be far larger.
    limit = 0.3 * FULL_SCALE * 2 * np.pi * frequency / dst
    jumps = np.abs(np.diff(steady.astype(np.int64)))
    assert jumps.max() <= 1.1 * limit + 2


def test_resampler_without_state_would_click() -> None:
    """Control for the continuity test: its limit does catch a filter restarted each frame."""
    frames = tone_frames(440.0, 8000, 20)  # 8.8 cycles a frame: boundaries fall mid-wave
    pieces = [Resampler(8000, 48000).process(f) for f in frames]
    steady = np.concatenate(pieces[WARMUP_FRAMES:])
    limit = 0.3 * FULL_SCALE * 2 * np.pi * 440.0 / 48000
    assert np.abs(np.diff(steady.astype(np.int64))).max() > 3 * limit


@pytest.mark.parametrize(("src", "dst"), [*RATE_PAIRS, (44100, 48000), (48000, 44100)])
def test_resampler_chunking_does_not_matter(src: int, dst: int) -> None:
    signal = np.concatenate(tone_frames(700.0, src, 10))
    whole = Resampler(src, dst).process(signal)
    chunked = Resampler(src, dst)
    sizes = [7, 13, 1, 160, 333, 29]
    pieces, start = [], 0
    for size in itertools.cycle(sizes):
        if start >= signal.size:
            break
        pieces.append(chunked.process(signal[start : start + size]))
        start += size
    streamed = np.concatenate(pieces)
    assert streamed.size == whole.size == pytest.approx(signal.size * dst / src, abs=1)
    assert np.max(np.abs(streamed.astype(np.int64) - whole)) <= 1


def test_resampler_identity_and_empty() -> None:
    frame = tone_frames(440.0, 8000, 1)[0]
    assert np.array_equal(Resampler(8000, 8000).process(frame), frame)
    assert Resampler(8000, 48000).process(np.zeros(0, dtype=np.int16)).size == 0
    with pytest.raises(ValueError):
        Resampler(0, 8000)


def test_resampler_rejects_aliases() -> None:
    # 5 kHz cannot be represented at 8 kHz: it must be filtered out, not folded to 3 kHz.
    resampler = Resampler(48000, 8000)
    out = np.concatenate([resampler.process(f) for f in tone_frames(5000.0, 48000, 30)])
    assert rms(out[160 * WARMUP_FRAMES :]) < 0.001 * 0.3 * FULL_SCALE


# --- tones and frequency measurement ---------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_tone_generator_phase_continuity(rate: int) -> None:
    gen = ToneGenerator(440.0, rate, amplitude=0.5)
    frames = [gen.next_frame() for _ in range(100)]
    assert all(f.shape == (rate // 50,) and f.dtype == np.int16 for f in frames)
    joined = np.concatenate(frames).astype(np.float64)
    n = np.arange(joined.size)
    ideal = 0.5 * FULL_SCALE * np.sin(2 * np.pi * 440.0 * n / rate)
    assert np.max(np.abs(joined - ideal)) <= 1.0
    assert np.abs(joined).max() == pytest.approx(0.5 * FULL_SCALE, rel=0.01)


def test_tone_generator_validates_amplitude() -> None:
    with pytest.raises(ValueError):
        ToneGenerator(440.0, 8000, amplitude=1.5)


def test_dominant_frequency() -> None:
    rate = 16000
    n = np.arange(rate // 2)
    signal = np.sin(2 * np.pi * 1234.5 * n / rate) + 0.1 * np.sin(2 * np.pi * 300 * n / rate)
    assert dominant_frequency(signal, rate) == pytest.approx(1234.5, rel=0.001)
    # One 20 ms frame is enough for a 1 % answer.
    assert dominant_frequency(tone_frames(1000.0, 8000, 1)[0], 8000) == pytest.approx(
        1000, rel=0.01
    )
    assert dominant_frequency(np.zeros(0, dtype=np.int16), 8000) == 0.0
    assert dominant_frequency(np.zeros(160, dtype=np.int16), 8000) == 0.0
