"""Decoding: container sniffing, the allow-list, and the limits enforced while decoding."""

from __future__ import annotations

import struct
import time
import tracemalloc

import numpy as np
import pytest

from arinext.service.decoding import decode_audio, resample, sniff
from arinext.service.errors import ApiError
from tests.service.audio import encode_av, encode_sf, signal, silence_flac


def _refusal(data: bytes, max_seconds: float = 600.0) -> ApiError:
    with pytest.raises(ApiError) as info:
        decode_audio(data, max_seconds)
    return info.value


@pytest.mark.parametrize(
    ("data", "container"),
    [
        (encode_sf(signal(0.2, 16000), 16000, "WAV", "PCM_16"), "wav"),
        (encode_sf(signal(0.2, 16000), 16000, "FLAC"), "flac"),
        (encode_sf(signal(0.2, 16000), 16000, "OGG", "VORBIS"), "ogg_vorbis"),
        (encode_sf(signal(0.2, 16000), 16000, "MP3"), "mp3"),
        (encode_av(signal(0.2, 48000), 48000, "ogg", "libopus"), "ogg_opus"),
        (encode_av(signal(0.2, 44100), 44100, "ipod", "aac"), "mp4"),
        (encode_av(signal(0.2, 44100), 44100, "adts", "aac"), "adts"),
        (encode_av(signal(0.2, 48000), 48000, "webm", "libopus"), "matroska"),
        (encode_av(signal(0.2, 44100), 44100, "mp3", "libmp3lame"), "mp3"),  # with an ID3 tag
    ],
)
def test_sniff_recognises_containers_by_magic_bytes(data: bytes, container: str) -> None:
    assert sniff(data) == container


@pytest.mark.parametrize(
    "data",
    [
        b"hello, world",
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        b"%PDF-1.7\n" + bytes(64),
        b"#EXTM3U\n#EXT-X-VERSION:3\nhttp://127.0.0.1/evil.ts\n",
        b"/etc/passwd",
        b"file:///etc/passwd",
        # An Ogg page whose first packet is Theora video, not an allowed audio codec.
        b"OggS\x00\x02" + bytes(20) + b"\x01" + b"\x2a" + b"\x80theora" + bytes(40),
    ],
)
def test_unknown_or_disallowed_formats_are_415(data: bytes) -> None:
    error = _refusal(data)
    assert error.status == 415
    assert error.code == "unsupported_media_type"


def test_empty_bytes_are_400() -> None:
    assert _refusal(b"").status == 400


def test_wav_truncated_in_header_or_data_is_400() -> None:
    wav = encode_sf(signal(1.0, 16000), 16000, "WAV", "PCM_16")
    assert _refusal(wav[:30]).status == 400
    error = _refusal(wav[: len(wav) // 2])
    assert error.status == 400
    assert "truncated" in error.message


def test_garbage_after_a_valid_signature_is_400_not_a_crash() -> None:
    rng = np.random.default_rng(0)
    for magic in (
        b"RIFF\x00\x00\x00\x00WAVE",
        b"fLaC",
        b"\x1a\x45\xdf\xa3",
        b"\x00\x00\x00\x18ftyp",
    ):
        error = _refusal(magic + rng.bytes(2000))
        assert error.status == 400, magic


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_samples_are_400(bad: float) -> None:
    x = signal(0.5, 16000)
    x[100, 0] = bad
    error = _refusal(encode_sf(x, 16000, "WAV", "FLOAT"))
    assert error.status == 400
    assert "NaN" in error.message


def test_duration_limit_counts_decoded_audio() -> None:
    wav = encode_sf(signal(3.0, 8000), 8000, "WAV", "PCM_16")
    assert decode_audio(wav, 3.5).duration == pytest.approx(3.0)
    error = _refusal(wav, 2.0)
    assert (error.status, error.code, error.reason) == (413, "audio_too_long", "too_long")


def test_tiny_flac_of_hours_is_refused_early_without_allocating_it() -> None:
    bomb = silence_flac(3 * 3600)  # 3 h at 8 kHz: 346 MB as float32, a few hundred KB as FLAC
    assert len(bomb) < 400_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        error = _refusal(bomb, 60.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.status == 413
    assert time.perf_counter() - started < 5.0
    assert peak < 20_000_000, f"decoding allocated {peak / 1e6:.0f} MB before refusing"


def test_long_opus_is_refused_while_decoding() -> None:
    opus = encode_av(np.zeros((48000 * 120, 1), np.float32), 48000, "ogg", "libopus")
    tracemalloc.start()
    try:
        error = _refusal(opus, 10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.status == 413
    assert peak < 10_000_000


def test_channels_are_averaged() -> None:
    x = np.stack([np.full(800, 0.5), np.full(800, -0.25)], axis=1).astype(np.float32)
    audio = decode_audio(encode_sf(x, 8000, "WAV", "FLOAT"), 10.0)
    assert audio.channels == 2
    np.testing.assert_allclose(audio.samples, 0.125, atol=1e-7)


def test_8_bit_unsigned_wav_is_centred() -> None:
    x = np.zeros((1600, 1), np.float32)
    audio = decode_audio(encode_sf(x, 8000, "WAV", "PCM_U8"), 10.0)
    np.testing.assert_allclose(audio.samples, 0.0, atol=1e-6)


def test_declared_sample_rate_out_of_range_is_400() -> None:
    wav = bytearray(encode_sf(signal(0.1, 8000), 8000, "WAV", "PCM_16"))
    struct.pack_into("<I", wav, 24, 1)  # sample rate field of the fmt chunk
    assert _refusal(bytes(wav)).status == 400


def test_resample_is_identity_at_equal_rates_and_keeps_duration() -> None:
    x = signal(1.0, 44100)[:, 0]
    assert resample(x, 44100, 44100) is x
    y = resample(x, 44100, 16000)
    assert y.dtype == np.float32
    assert abs(len(y) - 16000) <= 1


@pytest.mark.parametrize(
    "clean",
    [
        encode_sf(signal(0.3, 16000), 16000, "WAV", "PCM_16"),
        encode_sf(signal(0.3, 16000), 16000, "FLAC"),
        encode_sf(signal(0.3, 16000), 16000, "OGG", "VORBIS"),
        encode_sf(signal(0.3, 16000), 16000, "MP3"),
        encode_av(signal(0.3, 48000), 48000, "ogg", "libopus"),
        encode_av(signal(0.3, 44100), 44100, "ipod", "aac"),
        encode_av(signal(0.3, 48000), 48000, "webm", "libopus"),
        encode_av(signal(0.3, 22050), 22050, "adts", "aac"),
    ],
    ids=["wav", "flac", "vorbis", "mp3", "opus", "m4a", "webm", "adts"],
)
def test_corrupted_files_decode_or_are_refused_never_crash(clean: bytes) -> None:
    """Flipped bytes and cuts anywhere: the outcome is audio or an ApiError, nothing else.

    (Fuzzing like this found corrupt AAC frames that crash ``AudioFrame.to_ndarray``; the
    decoder reads frame planes with explicit bounds since.)
    """
    rng = np.random.default_rng(len(clean))
    for trial in range(500):
        data = bytearray(clean)
        if trial % 2:
            data = data[: int(rng.integers(1, len(data)))]
        for position in rng.integers(0, len(data), size=int(rng.integers(1, 20))):
            data[position] = int(rng.integers(0, 256))
        try:
            audio = decode_audio(bytes(data), 5.0)
        except ApiError as error:
            assert error.status in (400, 413, 415)
        else:
            assert np.isfinite(audio.samples).all() and audio.duration <= 5.0


def test_cut_compressed_streams_decode_up_to_the_cut_and_cut_indexed_files_are_400() -> None:
    """The documented rule: MP3, Ogg and WebM are streams (players play what arrived); a FLAC,
    M4A or WAV cut short is refused, as their headers or indexes promise what is missing."""
    two = signal(2.0, 48000)
    streams = [
        encode_sf(two, 48000, "MP3"),
        encode_sf(two, 48000, "OGG", "VORBIS"),
        encode_av(two, 48000, "webm", "libopus"),
    ]
    for data in streams:
        half = decode_audio(data[: len(data) // 2], 600)
        assert 0.2 < half.duration < 1.8
    for data in (
        encode_sf(two, 48000, "FLAC"),
        encode_av(two, 48000, "ipod", "aac"),
        encode_sf(two, 48000, "WAV", "PCM_16"),
    ):
        assert _refusal(data[: len(data) // 2]).status == 400


def test_error_messages_name_the_problem_without_internals() -> None:
    rng = np.random.default_rng(1)
    magics = (b"RIFF\x00\x00\x00\x00WAVE", b"fLaC", b"\x1a\x45\xdf\xa3", b"\x00\x00\x00\x18ftyp")
    for magic in magics:
        message = _refusal(magic + rng.bytes(4000)).message
        assert "corrupt" in message
        for internal in ("0x", "<", "Errno", "object at", "Error opening"):
            assert internal not in message, message
