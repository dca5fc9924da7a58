"""Log-mel front-end speed on one core: is audio preprocessing ever the serving bottleneck?

Times ``arinext.model.frontend.log_mel`` and ``clip_view`` on one view of white noise per preset and
prints a markdown table (median and p95 over ``--runs`` calls). Thread pools are pinned to one
thread before numpy is imported, because a server runs one request per core.

    python benchmarks/frontend_speed.py [--runs 200]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import fft as sp_fft  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from machine import cpu_model  # noqa: E402

from arinext.model.audio_config import get_preset  # noqa: E402
from arinext.model.frontend import clip_view, log_mel  # noqa: E402

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
            calls = {
                "log_mel": lambda w=wave, c=cfg, n=clip: log_mel(w[: n - 1], c),
                "clip_view": lambda w=wave, c=cfg: clip_view(w, 0, c),
            }
            for label, fn in calls.items():
                median, p95 = time_calls(fn, args.runs)
                print(
                    f"| {name} | {seconds:.2f} s @ {cfg.sample_rate // 1000} kHz | "
                    f"{cfg.num_frames} | {label} | {median:.2f} | {p95:.2f} | "
                    f"{seconds * 1e3 / median:.0f} |"
                )


if __name__ == "__main__":
    main()
