"""Uploaded bytes -> mono float PCM, without trusting the client.

The container is recognised from its magic bytes (never the filename or Content-Type), and only
allow-listed containers and codecs are decoded: libsndfile (``soundfile``) for WAV, FLAC, Ogg
Vorbis and MP3, FFmpeg (PyAV) for Opus, AAC/M4A, WebM/Matroska and the audio track of MP4 video.
PyAV is always told the demuxer to use and reads from an in-memory buffer, so no input can make it
probe formats, open URLs or follow playlists. Decoding is incremental and stops as soon as the
decoded duration passes the limit, so a few kilobytes that expand to hours are refused before the
hours are allocated.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf
import soxr

from service.errors import ApiError

__all__ = [
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "DecodedAudio",
    "decode_audio",
    "resample",
    "sniff",
]

MIN_SAMPLE_RATE = 2_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 64  # a header claiming thousands would make every decoded block huge
_BLOCK_FRAMES = 1 << 16

# Container -> (demuxer PyAV must use, codecs allowed in it); the others go to libsndfile.
_SOUNDFILE_CONTAINERS = frozenset({"wav", "flac", "ogg_vorbis", "mp3"})
_PYAV_CONTAINERS: dict[str, tuple[str, frozenset[str]]] = {
    "ogg_opus": ("ogg", frozenset({"opus"})),
    "mp4": ("mov", frozenset({"aac", "mp3", "mp3float", "alac", "opus", "flac"})),
    "matroska": ("matroska", frozenset({"opus", "vorbis", "aac", "flac"})),
    "adts": ("aac", frozenset({"aac"})),
}


@dataclass(frozen=True)
class DecodedAudio:
    """A clip downmixed to mono at its own sample rate; ``channels`` is what the file had."""

    samples: np.ndarray
    sample_rate: int
    channels: int
    container: str

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.samples) / self.sample_rate


def _unsupported(message: str) -> ApiError:
    return ApiError(415, "unsupported_media_type", message)


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_audio", message)


def _skip_id3(data: bytes) -> int:
    """Offset of the first MPEG frame after an ID3v2 tag (0 when there is none)."""
    if len(data) < 10 or data[:3] != b"ID3":
        return 0
    size = 0
    for byte in data[6:10]:  # "synchsafe": 7 bits per byte
        size = (size << 7) | (byte & 0x7F)
    footer = 10 if data[5] & 0x10 else 0
    return 10 + size + footer


def _ogg_codec(data: bytes) -> str:
    """Codec of the first logical stream of an Ogg file, from its first packet's signature."""
    if len(data) < 28:
        raise _invalid("truncated Ogg page")
    payload = data[27 + data[26] :]
    if payload.startswith(b"\x01vorbis"):
        return "ogg_vorbis"
    if payload.startswith(b"OpusHead"):
        return "ogg_opus"
    raise _unsupported("Ogg streams are supported with Vorbis or Opus audio only")


def sniff(data: bytes) -> str:
    """Name of the container ``data`` starts with; 415 when it is none we accept."""
    head = data[:12]
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return _ogg_codec(data)
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    offset = _skip_id3(data)
    frame = data[offset : offset + 2]
    if len(frame) == 2 and frame[0] == 0xFF and frame[1] & 0xE0 == 0xE0:
        layer = (frame[1] >> 1) & 0x3
        if layer == 0 and frame[1] & 0xF0 == 0xF0:
            return "adts"
        if layer != 0:
            return "mp3"
    raise _unsupported(
        "unrecognised audio format; send WAV, FLAC, Ogg (Vorbis/Opus), MP3, AAC/M4A, "
        "WebM/Opus or MP4"
    )


def _check_wav_length(data: bytes) -> None:
    """Refuse a WAV whose data chunk is cut short (libsndfile silently reads what is there)."""
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        if chunk_id == b"data":
            available = len(data) - pos - 8
            # 0 and 0xFFFFFFFF are what streaming writers leave when the length was unknown.
            if size not in (0, 0xFFFFFFFF) and available + 1 < size:
                raise _invalid(f"truncated WAV: data chunk declares {size} bytes, {available} sent")
            return
        pos += 8 + size + (size & 1)


class _Accumulator:
    """Collects mono blocks and enforces the duration limit as they arrive."""

    def __init__(self, sample_rate: int, channels: int, max_seconds: float) -> None:
        if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
            raise _invalid(
                f"sample rate {sample_rate} Hz outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
            )
        if not 1 <= channels <= MAX_CHANNELS:
            raise _invalid(f"{channels} channels; 1..{MAX_CHANNELS} are accepted")
        self.sample_rate = sample_rate
        self.channels = channels
        self.max_seconds = max_seconds
        self.limit = int(max_seconds * sample_rate)
        self.count = 0
        self.blocks: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        """Add a (frames, channels) float block."""
        self.count += block.shape[0]
        if self.count > self.limit:
            raise ApiError(
                413,
                "audio_too_long",
                f"decoded audio is longer than the limit of {self.max_seconds:g} s",
                reason="too_long",
            )
        if not np.isfinite(block).all():
            raise _invalid("audio contains NaN or infinite samples")
        self.blocks.append(block.mean(axis=1, dtype=np.float32))

    def result(self, container: str) -> DecodedAudio:
        if self.count == 0:
            raise _invalid("the file contains no audio samples")
        samples = np.concatenate(self.blocks) if len(self.blocks) > 1 else self.blocks[0]
        return DecodedAudio(samples, self.sample_rate, self.channels, container)


def _decode_soundfile(data: bytes, container: str, max_seconds: float) -> DecodedAudio:
    if container == "wav":
        _check_wav_length(data)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            acc = _Accumulator(f.samplerate, f.channels, max_seconds)
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                acc.add(block)
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise _invalid(f"cannot decode {container.upper()} data: {exc}") from exc
    return acc.result(container)


# FFmpeg sample formats (planar ones end in "p") -> numpy sample type.
_SAMPLE_TYPES = {
    "u8": np.uint8,
    "s16": np.int16,
    "s32": np.int32,
    "s64": np.int64,
    "flt": np.float32,
    "dbl": np.float64,
}


def _planar_float(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame as (frames, channels) float32, whatever FFmpeg's sample format.

    Reads the planes with explicit bounds instead of ``AudioFrame.to_ndarray``, which crashes
    the process on frames that corrupt input leaves with fewer samples than their header says.
    """
    kind = _SAMPLE_TYPES.get(frame.format.name.removesuffix("p"))
    if kind is None:
        raise _invalid(f"unsupported sample format {frame.format.name!r}")
    dtype = np.dtype(kind)
    samples, channels, planes = frame.samples, frame.layout.nb_channels, frame.planes
    if frame.format.is_planar:
        needed = samples * dtype.itemsize
        if len(planes) < channels or any(p.buffer_size < needed for p in planes[:channels]):
            raise _invalid("a decoded frame is inconsistent with its channel layout")
        array = np.stack(
            [np.frombuffer(p, dtype=dtype, count=samples) for p in planes[:channels]], axis=1
        )
    else:
        if not planes or planes[0].buffer_size < samples * channels * dtype.itemsize:
            raise _invalid("a decoded frame is shorter than its header says")
        array = np.frombuffer(planes[0], dtype=dtype, count=samples * channels)
        array = array.reshape(samples, channels)
    if dtype.kind == "f":
        return array.astype(np.float32)
    if dtype.kind == "u":  # 8-bit PCM is offset binary
        return (array.astype(np.float32) - 128.0) / 128.0
    return array.astype(np.float32) / float(2 ** (8 * dtype.itemsize - 1))


def _decode_pyav(data: bytes, container_name: str, max_seconds: float) -> DecodedAudio:
    demuxer, codecs = _PYAV_CONTAINERS[container_name]
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer, metadata_errors="ignore") as box:
            if not box.streams.audio:
                raise _invalid("the file has no audio track")
            stream = box.streams.audio[0]
            context = stream.codec_context  # None when FFmpeg has no decoder for the stream
            codec = context.name if context is not None else "unknown"
            if codec not in codecs:
                raise _unsupported(f"codec {codec!r} is not supported in {container_name}")
            acc: _Accumulator | None = None
            for frame in box.decode(stream):
                if acc is None:
                    acc = _Accumulator(frame.sample_rate, frame.layout.nb_channels, max_seconds)
                elif frame.sample_rate != acc.sample_rate:
                    raise _invalid("the sample rate changes within the stream")
                acc.add(_planar_float(frame))
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise _invalid(f"cannot decode {container_name} data: {exc}") from exc
    if acc is None:
        raise _invalid("the audio track holds no decodable frames")
    return acc.result(container_name)


def decode_audio(data: bytes, max_seconds: float) -> DecodedAudio:
    """Decode an upload to mono float32, refusing more than ``max_seconds`` of audio (413)."""
    if not data:
        raise ApiError(400, "empty_audio", "the request carried no audio bytes")
    container = sniff(data)
    if container in _SOUNDFILE_CONTAINERS:
        return _decode_soundfile(data, container, max_seconds)
    return _decode_pyav(data, container, max_seconds)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono float32 audio with soxr's high-quality filter (a no-op at equal rates)."""
    if from_rate == to_rate:
        return samples
    return soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)
