"""Generated test audio: signals and their encodings in every container the service accepts.

Nothing is downloaded or checked in: signals are synthesised (tones, chirps, noise) and encoded
with libsndfile (soundfile) or FFmpeg (PyAV's bundled encoders).
"""

from __future__ import annotations

import io

import av
import numpy as np
import soundfile as sf

__all__ = ["encode_av", "encode_sf", "signal", "silence_flac"]

_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def signal(seconds: float, rate: int, channels: int = 1, *, seed: int = 0) -> np.ndarray:
    """A chirp plus a little noise, different per channel, shape (frames, channels), in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    columns = []
    for c in range(channels):
        f0, f1 = 200.0 + 50 * c, min(4000.0, rate / 2.5)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(seconds, 1e-3)))
        columns.append(0.4 * np.sin(phase) + 0.05 * rng.standard_normal(len(t)))
    return np.stack(columns, axis=1).astype(np.float32)


def encode_sf(x: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    """Encode with libsndfile (WAV, FLAC, OGG Vorbis/Opus, MP3)."""
    buffer = io.BytesIO()
    sf.write(buffer, x, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def encode_av(
    x: np.ndarray, rate: int, container: str, codec: str, *, video: bool = False
) -> bytes:
    """Encode with FFmpeg via PyAV; ``video`` adds a small MPEG-4 video track (an MP4 "movie")."""
    channels = x.shape[1]
    layout = _LAYOUTS[channels]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        picture = None
        if video:  # every stream must exist before the first packet is muxed
            picture = out.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 64, 64, "yuv420p"
            for i in range(int(len(x) / rate * 10)):
                frame = av.VideoFrame.from_ndarray(
                    np.full((64, 64, 3), (i * 16) % 256, dtype=np.uint8), format="rgb24"
                )
                frame.pts = i
                for packet in picture.encode(frame):
                    out.mux(packet)
        step = 4096
        for start in range(0, len(x), step):
            chunk = np.ascontiguousarray(x[start : start + step].T)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if picture is not None:
            for packet in picture.encode(None):
                out.mux(packet)
    return buffer.getvalue()


def silence_flac(seconds: float, rate: int = 8000) -> bytes:
    """A FLAC of ``seconds`` of digital silence: tiny on disk, huge once decoded."""
    buffer = io.BytesIO()
    block = np.zeros(rate * 60, dtype=np.int16)
    with sf.SoundFile(buffer, "w", samplerate=rate, channels=1, format="FLAC") as f:
        whole, rest = divmod(int(seconds * rate), len(block))
        for _ in range(whole):
            f.write(block)
        f.write(block[:rest])
    return buffer.getvalue()
