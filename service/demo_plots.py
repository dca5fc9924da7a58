"""The demo's pictures: the log-mel the model sees, and each top class's score over time.

Drawn with matplotlib's object API (``Figure``, no pyplot state and no display needed) with
labelled axes in seconds and Hz and a colour bar, so a person can read them without knowing the
front-end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from arinext.model.audio_config import AudioConfig
from arinext.model.frontend import log_mel
from arinext.service.detection import KeywordEvent
from arinext.service.predict import HeadPrediction

__all__ = ["MAX_SPECTROGRAM_SECONDS", "display_label", "spectrogram_figure", "timeline_figure"]

MAX_SPECTROGRAM_SECONDS = 30.0
_MAX_COLUMNS = 1200  # frames averaged down to about the figure's width in pixels
_HZ_TICKS = (0, 250, 500, 1000, 2000, 4000, 8000, 16000, 24000)
_LINES_PER_HEAD = 5


def display_label(label: str) -> str:
    """What people read for a label: the "none of these" classes say so."""
    return {"_silence_": "no keyword (silence)", "_unknown_": "no keyword (other sound)"}.get(
        label, label
    )


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _hz(value: float, _: int) -> str:
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def spectrogram_figure(
    samples: np.ndarray, cfg: AudioConfig, detections: Sequence[KeywordEvent] = ()
) -> Figure:
    """The log-mel of mono ``samples`` at ``cfg.sample_rate`` (the first 30 s), as a figure.

    Time runs across in seconds; mel bands run up, labelled with the frequencies in Hz they sit
    at; the colour bar gives the log energy the network reads. Each detection is marked over
    the window that heard it, with its word.
    """
    samples = samples[: round(MAX_SPECTROGRAM_SECONDS * cfg.sample_rate)]
    spec = log_mel(samples, cfg)
    seconds = len(samples) / cfg.sample_rate
    if len(spec) > _MAX_COLUMNS:
        step = -(-len(spec) // _MAX_COLUMNS)
        usable = len(spec) // step * step
        spec = spec[:usable].reshape(-1, step, spec.shape[1]).mean(axis=1)
    figure = Figure(figsize=(8, 3.4), layout="constrained")
    axes = figure.subplots()
    low_mel, high_mel = _hz_to_mel(cfg.fmin), _hz_to_mel(cfg.mel_fmax)
    vmin, vmax = np.percentile(spec, [1, 99.5])
    image = axes.imshow(
        spec.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0.0, seconds, float(low_mel), float(high_mel)),
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    ticks = [hz for hz in _HZ_TICKS if cfg.fmin <= hz <= cfg.mel_fmax]
    axes.set_yticks(_hz_to_mel(np.asarray(ticks, dtype=float)), [_hz(t, 0) for t in ticks])
    axes.set_xlabel("time (s)")
    axes.set_ylabel("frequency (Hz, mel scale)")
    axes.set_title(
        f"Log-mel spectrogram ({cfg.n_mels} mel bands, {cfg.sample_rate} Hz)",
        pad=14 if detections else 6,
    )
    bar = figure.colorbar(image, ax=axes, pad=0.01)
    bar.set_label("log mel energy")
    _mark(axes, detections, seconds)
    return figure


def _mark(axes: Any, detections: Sequence[KeywordEvent], seconds: float) -> None:
    """Outline each detection's window and write its word above it."""
    for event in detections:
        if event.start >= seconds:
            continue
        axes.axvspan(event.start, min(event.end, seconds), fill=False, edgecolor="white", lw=1.5)
        axes.annotate(
            display_label(event.label),
            xy=((event.start + event.end) / 2, 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="bottom",
            fontsize="small",
            fontweight="bold",
        )


def timeline_figure(predictions: list[HeadPrediction]) -> Figure:
    """Each head's top classes' scores per window over time (one panel per head).

    A class is drawn at each window's centre; windows where it was not among the window's
    reported top-k are drawn at 0, its score there being smaller than every reported one.
    """
    figure = Figure(figsize=(8, 1.0 + 2.4 * len(predictions)), layout="constrained")
    panels = figure.subplots(len(predictions), 1, squeeze=False)[:, 0]
    for axes, prediction in zip(panels, predictions, strict=True):
        windows = prediction.windows or []
        centres = [(w.start + w.end) / 2 for w in windows]
        for scored in prediction.top_k[:_LINES_PER_HEAD]:
            scores = [
                next((s.score for s in w.top_k if s.label == scored.label), 0.0) for w in windows
            ]
            axes.plot(centres, scores, marker="o", markersize=3, label=display_label(scored.label))
        if windows:
            axes.set_xlim(windows[0].start, windows[-1].end)
        axes.set_ylim(0, 1.02)
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
        axes.set_ylabel("score")
        axes.set_title(f"{prediction.head}: top classes over time", pad=14)
        for event in prediction.detections:
            axes.axvline((event.start + event.end) / 2, color="black", lw=1, ls="--", alpha=0.6)
        if windows:
            _mark(axes, prediction.detections, windows[-1].end)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    panels[-1].set_xlabel("time (s), window centres")
    return figure
