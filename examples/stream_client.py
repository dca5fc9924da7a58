"""Stream a file or the default microphone to a running arinext server and print what it hears.

    python examples/stream_client.py clip.wav                 # a file, paced at real time
    python examples/stream_client.py mic                      # the microphone (needs sounddevice)
    python examples/stream_client.py clip.wav --windows       # every window's top label too
    python examples/stream_client.py clip.wav --url ws://host:8000/stream --hop 0.5

Files in any format the server accepts are decoded here (``arinext.model.audio_io``) and sent as
float32 PCM in 20 ms messages, as a live source would send them; the microphone is read with
``sounddevice`` (``pip install sounddevice``; it needs PortAudio, ``apt-get install
libportaudio2``). Detections are printed as they arrive; the exit status is 0 when the server
closed the stream normally, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import websockets

from arinext.model.audio_io import decode

CHUNK_SECONDS = 0.02
MIC_RATE = 16000


async def file_chunks(path: Path, speed: float) -> tuple[int, AsyncIterator[np.ndarray]]:
    """The file's rate and its mono samples in 20 ms chunks, paced at ``speed`` x real time."""
    audio = decode(path.read_bytes(), max_seconds=24 * 3600)
    step = round(CHUNK_SECONDS * audio.sample_rate)

    async def chunks() -> AsyncIterator[np.ndarray]:
        began = time.monotonic()
        for sent in range(0, len(audio.samples), step):
            delay = began + sent / audio.sample_rate / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield audio.samples[sent : sent + step]

    return audio.sample_rate, chunks()


async def mic_chunks() -> tuple[int, AsyncIterator[np.ndarray]]:
    """The default microphone at 16 kHz mono, until interrupted."""
    try:
        import sounddevice
    except ImportError:
        sys.exit("the microphone needs sounddevice: pip install sounddevice (and PortAudio)")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[np.ndarray] = asyncio.Queue()

    def callback(data: np.ndarray, frames: int, when: object, status: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, data[:, 0].copy())

    async def chunks() -> AsyncIterator[np.ndarray]:
        blocksize = round(CHUNK_SECONDS * MIC_RATE)
        with sounddevice.InputStream(
            samplerate=MIC_RATE, channels=1, dtype="float32", blocksize=blocksize, callback=callback
        ):
            while True:
                yield await queue.get()

    return MIC_RATE, chunks()


def describe(event: dict, show_windows: bool) -> str | None:
    """One printed line per event worth showing."""
    kind = event["type"]
    if kind == "detection":
        return (
            f"{event['end']:8.2f} s  DETECTED {event['label']!r} ({event['head']}, "
            f"score {event['score']:.2f})"
        )
    if kind == "window" and show_windows:
        tops = ", ".join(
            f"{p['head']}: {p['top_k'][0]['label']} {p['top_k'][0]['score']:.2f}"
            for p in event["predictions"]
        )
        return f"{event['start']:8.2f}-{event['end']:.2f} s  {tops}"
    if kind == "ready":
        models = ", ".join(f"{m['name']} ({m['window']:g} s windows)" for m in event["models"])
        return f"streaming to {models}, hop {event['hop']:g} s; Ctrl-C to stop"
    if kind == "end":
        lag = event["lag_ms"]
        return (
            f"done: {event['audio_seconds']:.2f} s of audio, {event['windows']} windows, "
            f"{event['detections']} detections, event lag mean {lag['mean']:.0f} ms, "
            f"max {lag['max']:.0f} ms"
        )
    if kind == "error":
        return f"refused: {event['error']['code']}: {event['error']['message']}"
    return None


async def run(args: argparse.Namespace) -> int:
    if args.source == "mic":
        rate, chunks = await mic_chunks()
    else:
        rate, chunks = await file_chunks(Path(args.source), args.speed)
    start = {"type": "start", "format": "f32le", "sample_rate": rate, "hop": args.hop}
    start |= {"top_k": args.top_k}
    if args.threshold is not None:
        start["threshold"] = args.threshold
    if args.heads:
        start["heads"] = args.heads.split(",")
    async with websockets.connect(args.url, max_size=2**22) as ws:
        await ws.send(json.dumps(start))

        async def send() -> None:
            try:
                async for chunk in chunks:
                    await ws.send(chunk.astype("<f4").tobytes())
                await ws.send(json.dumps({"type": "end"}))
            except websockets.ConnectionClosed:
                pass

        sender = asyncio.create_task(send())
        try:
            async for message in ws:
                line = describe(json.loads(message), args.windows)
                if line:
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
        finally:
            sender.cancel()
        code = ws.close_code
        if code != 1000:
            sys.stderr.write(f"closed with {code}: {ws.close_reason}\n")
        return 0 if code == 1000 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="an audio file, or 'mic' for the default microphone")
    parser.add_argument("--url", default="ws://127.0.0.1:8000/stream")
    parser.add_argument("--hop", type=float, default=0.25, help="seconds between windows")
    parser.add_argument(
        "--threshold", type=float, default=None, help="detection score (default: the model's)"
    )
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--heads", help="comma-separated heads (default: all)")
    parser.add_argument("--windows", action="store_true", help="print every window's top label")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="file pace in x real time (the server allows 1.5)"
    )
    args = parser.parse_args()
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
