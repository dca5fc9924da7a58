"""Log-mel front-end speed on one core: is audio preprocessing ever the serving bottleneck?

Times ``arinext.model.frontend.log_mel`` and ``clip_view`` on one view of white noise per preset and
prints a markdown table (median and p95 over ``--runs`` calls); then a live stream's windows of the
embedded default model (``IncrementalViews``, every frame a hop adds computed once) at a hop on the
front-end's frame grid (``window_start``, what the service cuts) and at exact multiples of 0.25 s
(12.5 frame hops, where windows share frames only with the window two hops back), against
computing each window whole; and a 10 s upload's windows (``features``, frames shared the same
way) against each window computed whole. Thread pools are pinned to one thread before numpy is
imported, because a server runs one request per core.

    python benchmarks/frontend_speed.py [--runs 200] [--model service/default_model]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import fft as sp_fft  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a plain checkout

from machine import cpu_model  # noqa: E402

from arinext.model.audio_config import get_preset  # noqa: E402
from arinext.model.frontend import IncrementalViews, clip_view, log_mel, window_start  # noqa: E402
from arinext.model.manifest import read_manifest  # noqa: E402
from arinext.service.prepare import features, window_starts  # noqa: E402

PRESETS = ("vggsound", "speech_commands", "epic_sounds")
WARMUP = 5


def time_calls(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and 95th percentile wall time of ``fn()`` in milliseconds."""
    for _ in range(WARMUP):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return float(np.median(times) * 1e3), float(np.percentile(times, 95) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed calls per row (200)")
    parser.add_argument("--model", type=Path, default=ROOT / "service" / "default_model")
    parser.add_argument("--hop", type=float, default=0.25, help="stream hop in seconds (0.25)")
    args = parser.parse_args()

    print(f"CPU: {cpu_model()}; 1 thread; numpy {np.__version__}; {args.runs} runs per row\n")
    print("| preset | clip | frames | function | median ms | p95 ms | x real time |")
    print("|---|---:|---:|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    with sp_fft.set_workers(1):
        for name in PRESETS:
            cfg = get_preset(name)
            clip = cfg.clip_samples
            wave = (0.1 * rng.standard_normal(clip)).astype(np.float32)
            seconds = clip / cfg.sample_rate
            calls: dict[str, Callable[[], object]] = {
                "log_mel": partial(log_mel, wave[: clip - 1], cfg),
                "clip_view": partial(clip_view, wave, 0, cfg),
            }
            for label, fn in calls.items():
                median, p95 = time_calls(fn, args.runs)
                print(
                    f"| {name} | {seconds:.2f} s @ {cfg.sample_rate // 1000} kHz | "
                    f"{cfg.num_frames} | {label} | {median:.2f} | {p95:.2f} | "
                    f"{seconds * 1e3 / median:.0f} |"
                )
        stream_windows(args.model, args.hop, args.runs)
        long_clip(args.model, args.hop, args.runs)


def long_clip(model: Path, hop_seconds: float, runs: int) -> None:
    """A 10 s upload's windows (``/classify?windows=true``): shared frames against whole views."""
    configs = {"default model": read_manifest(model).frontend}
    configs.update({name: get_preset(name) for name in PRESETS})
    print(
        f"\nA 10 s clip's windows every {hop_seconds:g} s (`features`, as /classify cuts them):\n"
    )
    print("| front-end | windows | shared frames ms | whole windows ms | speed-up |")
    print("|---|---:|---:|---:|---:|")
    rounds = max(1, runs // 40)
    for name, cfg in configs.items():
        wave = (0.1 * np.random.default_rng(2).standard_normal(10 * cfg.sample_rate)).astype(
            np.float32
        )
        starts = window_starts(len(wave), cfg, hop_seconds)
        features(wave, starts[:2], cfg)  # warm-up: the filterbank and FFT plans
        shared, whole = [], []
        for _ in range(rounds):
            began = time.perf_counter()
            features(wave, starts, cfg)
            shared.append(time.perf_counter() - began)
            began = time.perf_counter()
            np.stack([clip_view(wave, s, cfg) for s in starts])
            whole.append(time.perf_counter() - began)
        a, b = float(np.median(shared)) * 1e3, float(np.median(whole)) * 1e3
        print(f"| {name} | {len(starts)} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")


def stream_windows(model: Path, hop_seconds: float, runs: int) -> None:
    """One stream's windows: ms per window, interleaved over ``runs`` rounds of 20 windows."""
    cfg = read_manifest(model).frontend
    hop = round(hop_seconds * cfg.sample_rate)
    wave = (0.1 * np.random.default_rng(1).standard_normal(30 * cfg.sample_rate)).astype(np.float32)
    grids = {
        "frame grid (served)": lambda k: window_start(k, hop, cfg),
        f"exact {hop_seconds:g} s": lambda k: k * hop,
    }
    kinds = [(name, True) for name in grids] + [("whole windows", False)]
    times: dict[str, list[float]] = {name: [] for name, _ in kinds}
    frames: dict[str, float] = {}
    for _ in range(max(1, runs // 20)):
        for name, incremental in kinds:
            start_of = grids.get(name, grids["frame grid (served)"])
            views = IncrementalViews(cfg)
            views.view(wave[: cfg.clip_samples], 0)  # the stream's first window: all frames
            views.computed = 0
            began = time.perf_counter()
            for k in range(1, 21):
                start = start_of(k)
                window = wave[start : start + cfg.clip_samples]
                if incremental:
                    views.view(window, start)
                else:
                    clip_view(window, 0, cfg)
            times[name].append((time.perf_counter() - began) / 20 * 1e3)
            frames[name] = views.computed / 20 if incremental else cfg.num_frames
    print(
        f"\nStream windows of {model} ({cfg.num_frames} frames of {cfg.hop_ms:g} ms), hop "
        f"{hop_seconds:g} s, median of {len(times['whole windows'])} interleaved rounds:\n"
    )
    print("| windows | frames computed per window | ms per window | vs whole windows |")
    print("|---|---:|---:|---:|")
    whole = float(np.median(times["whole windows"]))
    for name, _ in kinds:
        ms = float(np.median(times[name]))
        print(f"| {name} | {frames[name]:.1f} | {ms:.3f} | {whole / ms:.2f}x |")


if __name__ == "__main__":
    main()
