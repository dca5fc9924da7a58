"""Audio bytes or files -> mono float32 PCM at the rates models need; used by serving and training.

One module decodes and resamples for everyone, so a clip the service classifies is read exactly
as training read it (torch-free, like the rest of ``model/``).

Uploads are never trusted: the container is recognised from its magic bytes (never a filename or
Content-Type) and only allow-listed containers and codecs are decoded: libsndfile (``soundfile``)
for WAV, FLAC, Ogg Vorbis and MP3, FFmpeg (PyAV) for Opus, AAC/M4A, WebM/Matroska and the audio
track of MP4 video. PyAV is always told the demuxer and reads from memory, so no input can make it
probe formats, open URLs or follow playlists.

Decoding is a stream of blocks: each block is downmixed and fed to a soxr resampling stream per
target rate, so a request holds the samples at the model's rate and one block at the file's rate,
whatever the file's rate; the duration limit is checked per block, so a few kilobytes that expand
to hours are refused before the hours exist. Streaming soxr gives the same samples as one-shot.
"""

from __future__ import annotations

import io
import math
import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

import av
import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "AudioError",
    "DecodedAudio",
    "ResampledAudio",
    "decode",
    "decode_resampled",
    "planar_float",
    "read_file",
    "resample",
    "sniff",
]

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 64  # a header claiming thousands would make every decoded block huge
_BLOCK_FRAMES = 1 << 15
_QUALITY = "HQ"

# Container -> (demuxer PyAV must use, codecs allowed in it); the others go to libsndfile.
_SOUNDFILE_CONTAINERS = frozenset({"wav", "flac", "ogg_vorbis", "mp3"})
_PYAV_CONTAINERS: dict[str, tuple[str, frozenset[str]]] = {
    "ogg_opus": ("ogg", frozenset({"opus"})),
    "mp4": ("mov", frozenset({"aac", "mp3", "mp3float", "alac", "opus", "flac"})),
    "matroska": ("matroska", frozenset({"opus", "vorbis", "aac", "flac"})),
    "adts": ("aac", frozenset({"aac"})),
}
_NAMES = {"ogg_vorbis": "Ogg Vorbis", "ogg_opus": "Ogg Opus", "adts": "AAC", "matroska": "WebM"}

ErrorKind = Literal["empty", "invalid", "unsupported", "too_long"]


class AudioError(ValueError):
    """Audio that is refused: ``empty`` (no bytes), ``invalid`` (corrupt or out of range),
    ``unsupported`` (a format or codec not on the allow-list) or ``too_long`` (over a limit).

    Messages name the problem in the user's terms, never library internals.
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _invalid(message: str) -> AudioError:
    return AudioError("invalid", message)


def _unsupported(message: str) -> AudioError:
    return AudioError("unsupported", message)


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
    """Name of the container ``data`` starts with; ``unsupported`` when it is none we accept."""
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


# A decoder yields (sample rate, channels, (frames, channels) float32 block, frames the header
# declares or 0) per block; the declared length is only a hint for preallocation.
_Blocks = Iterator[tuple[int, int, np.ndarray, int]]


def _soundfile_blocks(data: bytes, container: str) -> _Blocks:
    if container == "wav":
        _check_wav_length(data)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    return
                yield f.samplerate, f.channels, block, max(f.frames, 0)
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        if isinstance(exc, AudioError):
            raise
        raise _invalid(f"the {_NAMES.get(container, container.upper())} data is corrupt") from exc


# FFmpeg sample formats (planar ones end in "p") -> numpy sample type.
_SAMPLE_TYPES = {
    "u8": np.uint8,
    "s16": np.int16,
    "s32": np.int32,
    "s64": np.int64,
    "flt": np.float32,
    "dbl": np.float64,
}


def planar_float(frame: av.AudioFrame) -> np.ndarray:
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
            [np.frombuffer(memoryview(p), dtype=dtype, count=samples) for p in planes[:channels]],
            axis=1,
        )
    else:
        if not planes or planes[0].buffer_size < samples * channels * dtype.itemsize:
            raise _invalid("a decoded frame is shorter than its header says")
        array = np.frombuffer(memoryview(planes[0]), dtype=dtype, count=samples * channels)
        array = array.reshape(samples, channels)
    if dtype.kind == "f":
        return array.astype(np.float32)
    if dtype.kind == "u":  # 8-bit PCM is offset binary
        return (array.astype(np.float32) - 128.0) / 128.0
    return array.astype(np.float32) / float(2 ** (8 * dtype.itemsize - 1))


def _pyav_blocks(data: bytes, container: str) -> _Blocks:
    demuxer, codecs = _PYAV_CONTAINERS[container]
    name = _NAMES.get(container, container.upper())
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer, metadata_errors="ignore") as box:
            if not box.streams.audio:
                raise _invalid("the file has no audio track")
            stream = box.streams.audio[0]
            context = stream.codec_context  # None when FFmpeg has no decoder for the stream
            codec = context.name if context is not None else "unknown"
            if codec not in codecs:
                raise _unsupported(f"codec {codec!r} is not supported in {name}")
            declared = 0
            if stream.duration is not None and stream.time_base is not None:
                declared = int(stream.duration * stream.time_base * (stream.sample_rate or 0))
            for frame in box.decode(stream):
                yield frame.sample_rate, frame.layout.nb_channels, planar_float(frame), declared
    except (av.FFmpegError, ValueError, EOFError) as exc:
        if isinstance(exc, AudioError):
            raise
        raise _invalid(f"the {name} data is corrupt") from exc


def _mono_blocks(data: bytes, max_seconds: float) -> tuple[str, _Blocks]:
    """The container and its mono float32 blocks, each checked against every limit."""
    if not data:
        raise AudioError("empty", "the request carried no audio bytes")
    container = sniff(data)
    source = (
        _soundfile_blocks(data, container)
        if container in _SOUNDFILE_CONTAINERS
        else _pyav_blocks(data, container)
    )

    def checked() -> _Blocks:
        first: tuple[int, int] | None = None
        frames = 0
        limit = 0
        for rate, channels, block, declared in source:
            if first is None:
                if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                    raise _invalid(
                        f"sample rate {rate} Hz is outside the accepted "
                        f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
                    )
                if not 1 <= channels <= MAX_CHANNELS:
                    raise _invalid(f"{channels} channels; 1..{MAX_CHANNELS} are accepted")
                first, limit = (rate, channels), int(max_seconds * rate)
            elif rate != first[0]:
                raise _invalid("the sample rate changes within the stream")
            elif channels != first[1]:
                raise _invalid("the number of channels changes within the stream")
            frames += block.shape[0]
            if frames > limit:
                raise AudioError(
                    "too_long", f"decoded audio is longer than the limit of {max_seconds:g} s"
                )
            if not np.isfinite(block).all():
                raise _invalid("audio contains NaN or infinite samples")
            yield rate, channels, block.mean(axis=1, dtype=np.float32), min(declared, limit)
        if first is None:
            raise _invalid("the file contains no audio samples")

    return container, checked()


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


@dataclass(frozen=True)
class ResampledAudio:
    """A clip downmixed to mono at each requested rate; the file's own rate and channels."""

    at_rate: dict[int, np.ndarray]
    sample_rate: int
    channels: int
    container: str
    frames: int
    resample_seconds: float = 0.0  # of the decode call, spent in soxr

    @property
    def duration(self) -> float:
        """Seconds of audio (counted at the file's rate)."""
        return self.frames / self.sample_rate


def _join(blocks: list[np.ndarray]) -> np.ndarray:
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def decode(data: bytes, max_seconds: float) -> DecodedAudio:
    """Decode to mono float32 at the file's rate, refusing more than ``max_seconds``."""
    container, blocks = _mono_blocks(data, max_seconds)
    parts, rate, channels = [], 0, 0
    for block_rate, block_channels, block, _ in blocks:
        parts.append(block)
        rate, channels = block_rate, block_channels
    return DecodedAudio(_join(parts), rate, channels, container)


class _Output:
    """Samples at one rate, appended block by block into one buffer, so the result needs no
    final copy (a list of blocks joined at the end would peak at twice the clip)."""

    def __init__(self) -> None:
        self.buffer = np.zeros(0, dtype=np.float32)
        self.size = 0

    def reserve(self, count: int) -> None:
        if count > len(self.buffer):
            self._resize(count)

    def append(self, block: np.ndarray) -> None:
        end = self.size + len(block)
        if end > len(self.buffer):
            self._resize(max(end, len(self.buffer) * 3 // 2 + _BLOCK_FRAMES))
        self.buffer[self.size : end] = block
        self.size = end

    def _resize(self, capacity: int) -> None:
        grown = np.empty(capacity, dtype=np.float32)
        grown[: self.size] = self.buffer[: self.size]
        self.buffer = grown

    def result(self) -> np.ndarray:
        if len(self.buffer) > self.size + self.size // 4 + _BLOCK_FRAMES:  # a header overstated
            return self.buffer[: self.size].copy()
        return self.buffer[: self.size]


def decode_resampled(data: bytes, rates: Iterable[int], max_seconds: float) -> ResampledAudio:
    """Decode and resample as one stream: mono float32 at each of ``rates``.

    Memory is the output at the target rates plus one block at the file's rate, so a 384 kHz
    file costs what its 16 kHz version does. The output is preallocated from the length the
    header declares (capped by ``max_seconds``) and grows if the header understated it.
    """
    targets = list(dict.fromkeys(rates))
    container, blocks = _mono_blocks(data, max_seconds)
    streams: dict[int, soxr.ResampleStream | None] = {}
    outputs = {rate: _Output() for rate in targets}
    frames, rate, channels, spent = 0, 0, 0, 0.0
    for block_rate, block_channels, block, declared in blocks:
        if not streams:
            rate, channels = block_rate, block_channels
            streams = {
                t: None if t == rate else soxr.ResampleStream(rate, t, 1, "float32", _QUALITY)
                for t in targets
            }
            for target, output in outputs.items():
                output.reserve(math.ceil(declared * target / rate) + 16)
        frames += len(block)
        began = time.perf_counter()
        for target, stream in streams.items():
            outputs[target].append(block if stream is None else stream.resample_chunk(block))
        spent += time.perf_counter() - began
    began = time.perf_counter()
    for target, stream in streams.items():
        if stream is not None:
            outputs[target].append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    at_rate = {t: outputs[t].result() for t in targets}
    spent += time.perf_counter() - began
    return ResampledAudio(at_rate, rate, channels, container, frames, spent)


def read_file(path: str | os.PathLike[str] | BinaryIO) -> tuple[np.ndarray, int]:
    """A trusted file (any format libsndfile reads) as mono float32 and its rate, for datasets."""
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    return samples.mean(axis=1, dtype=np.float32), int(rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono float32 audio with soxr's high-quality filter (a no-op at equal rates)."""
    if from_rate == to_rate:
        return samples
    return soxr.resample(samples, from_rate, to_rate, quality=_QUALITY).astype(
        np.float32, copy=False
    )
