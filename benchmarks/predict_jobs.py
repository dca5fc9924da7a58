"""``arinext predict --jobs N``: how much the decoding processes buy on this machine.

Writes a corpus of clips in several formats and sample rates (44.1/48 kHz, as phones and cameras
record them, so decoding and resampling are real work), then runs ``arinext predict`` over it
with each ``--jobs`` value, interleaved for ``--rounds`` rounds so that load from other processes
hits every setting alike, and prints the median wall time per setting and its speed-up over the
first. The outputs of all runs must be identical (checked).

    python benchmarks/predict_jobs.py [--files 200] [--jobs 1 2] [--rounds 3] [--models DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a plain checkout

from machine import cpu_model  # noqa: E402

_FORMATS = (("wav", "WAV", "PCM_16"), ("flac", "FLAC", None), ("ogg", "OGG", "VORBIS"))


def write_corpus(root: Path, files: int, seconds: float) -> None:
    """``files`` noisy chirps of ``seconds`` in WAV, FLAC and Ogg Vorbis at 44.1/48 kHz."""
    rng = np.random.default_rng(0)
    for i in range(files):
        suffix, container, subtype = _FORMATS[i % len(_FORMATS)]
        rate = (44_100, 48_000)[i % 2]
        t = np.arange(int(seconds * rate)) / rate
        x = 0.3 * np.sin(2 * np.pi * (200 + 40 * (i % 50)) * t * (1 + t))
        x += 0.05 * rng.standard_normal(len(t))
        buffer = io.BytesIO()
        sf.write(buffer, x.astype(np.float32), rate, format=container, subtype=subtype)
        (root / f"clip{i:04d}.{suffix}").write_bytes(buffer.getvalue())


def run(corpus: Path, jobs: int, models: list[str], out: Path) -> float:
    command = [sys.executable, "-m", "arinext", "predict", str(corpus), "--jobs", str(jobs)]
    command += ["--output", str(out)] + (["--models", *models] if models else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    began = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=[], help="default: the embedded model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        write_corpus(corpus, args.files, args.seconds)
        times: dict[int, list[float]] = {jobs: [] for jobs in args.jobs}
        outputs: set[str] = set()
        for _ in range(args.rounds):
            for jobs in args.jobs:
                out = Path(tmp) / f"jobs{jobs}.jsonl"
                times[jobs].append(run(corpus, jobs, args.models, out))
                outputs.add(out.read_text())
        if len(outputs) != 1:
            sys.stderr.write("error: runs with different --jobs gave different results\n")
            return 1
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; {args.files} clips of {args.seconds:g} s")
    print(f"(WAV/FLAC/Ogg Vorbis, 44.1/48 kHz); median of {args.rounds} interleaved runs\n")
    print("| --jobs | wall s | files/s | speed-up |")
    print("|---:|---:|---:|---:|")
    base = statistics.median(times[args.jobs[0]])
    for jobs in args.jobs:
        wall = statistics.median(times[jobs])
        print(f"| {jobs} | {wall:.2f} | {args.files / wall:.1f} | {base / wall:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
