"""Inference speed of ONNX graphs, measured the way ``benchmark_app`` and ``onnxruntime_perf_test``
do: a fixed random input, warm-up runs, then the latency of every run.

When several graphs are compared they take turns run by run (:func:`time_interleaved`), so load
from other processes on a shared machine falls on all of them alike; their ratios are then
meaningful even when absolute times drift. ``arinext bench`` and ``benchmarks/model_speed.py``
both time through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arinext.model.backends import Session, open_session
from arinext.model.manifest import MANIFEST_FILE, MODEL_FILE, read_manifest

__all__ = ["Timing", "bench_model", "input_shape", "random_input", "time_interleaved"]


@dataclass(frozen=True)
class Timing:
    """Per-run latencies of one graph at one batch size, summarised."""

    batch: int
    runs: int
    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p90_ms: float

    @classmethod
    def of(cls, seconds: np.ndarray, batch: int) -> Timing:
        """Summary of per-run wall times in seconds."""
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        return cls(
            batch=batch,
            runs=len(ms),
            median_ms=float(np.median(ms)),
            mean_ms=float(ms.mean()),
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            p90_ms=float(np.percentile(ms, 90)),
        )

    @property
    def ms_per_clip(self) -> float:
        """Median run time divided by the batch size."""
        return self.median_ms / self.batch

    @property
    def clips_per_second(self) -> float:
        """Throughput at the median run time."""
        return 1e3 * self.batch / self.median_ms

    def as_dict(self) -> dict[str, Any]:
        """The fields plus ms per clip and clips per second (for ``--json``)."""
        return {
            **asdict(self),
            "ms_per_clip": self.ms_per_clip,
            "clips_per_second": self.clips_per_second,
        }


def time_interleaved(
    calls: Sequence[Callable[[], object]], *, runs: int, warmup: int, batch: int
) -> list[Timing]:
    """Time each call ``runs`` times after ``warmup`` runs, the calls taking turns."""
    for call in calls:
        for _ in range(warmup):
            call()
    seconds = np.empty((runs, len(calls)))
    for i in range(runs):
        for j, call in enumerate(calls):
            start = time.perf_counter()
            call()
            seconds[i, j] = time.perf_counter() - start
    return [Timing.of(seconds[:, j], batch) for j in range(len(calls))]


def input_shape(session: Session, model: Path, given: Sequence[int] | None) -> tuple[int, ...]:
    """The shape of one input item (no batch axis): given, from a manifest, or from the graph."""
    if given:
        return tuple(given)
    directory = model.parent if model.is_file() else model
    if (directory / MANIFEST_FILE).is_file():
        cfg = read_manifest(directory).frontend
        return (1, cfg.num_frames, cfg.n_mels)
    dims = session.input_shapes[session.input_names[0]][1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise ValueError(
            f"the graph's input has dynamic dimensions {dims} beyond the batch; give the shape "
            "of one item, e.g. --shape 1,512,128"
        )
    return tuple(d for d in dims if isinstance(d, int))  # all of them, checked above


def random_input(batch: int, shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Log-mel-like float32 input (mean -4, std 2): zeros would flatter some kernels."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, *shape)) * 2 - 4).astype(np.float32)


def bench_model(
    model: Path | str,
    *,
    backend: str = "onnxruntime",
    precision: str = "auto",
    threads: int = 0,
    batch: int = 1,
    runs: int = 50,
    warmup: int = 5,
    shape: Sequence[int] | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> dict[str, Any]:
    """Load ``model`` (an artifact directory or an ONNX file), time it, and report as a dict."""
    path = Path(model)
    graph = path / MODEL_FILE if path.is_dir() else path
    began = time.perf_counter()
    session = open_session(
        graph, backend=backend, precision=precision, threads=threads, providers=providers
    )
    load_ms = (time.perf_counter() - began) * 1e3
    item = input_shape(session, path, shape)
    feed = {session.input_names[0]: random_input(batch, item)}
    outputs = session.output_names
    began = time.perf_counter()
    session.run(outputs, feed)
    first_ms = (time.perf_counter() - began) * 1e3
    (timing,) = time_interleaved(
        [lambda: session.run(outputs, feed)], runs=runs, warmup=warmup, batch=batch
    )
    return {
        "model": str(graph),
        "backend": backend,
        "precision": precision,
        "session": session.description,
        "threads": threads,
        "input_shape": [batch, *item],
        "load_ms": load_ms,
        "first_run_ms": first_ms,
        **timing.as_dict(),
    }
