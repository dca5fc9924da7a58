"""``train_keywords``: a keyword artifact for the given phrases, from speech to written artifact.

1. **Speech** (:mod:`.speech`): espeak-ng renditions of the phrases and the negatives, plus the
   user's recordings.
2. **Window and views** (:mod:`.views`): the window the phrases' durations ask for; each clip
   placed in it and augmented into log-mel views.
3. **Features** (:mod:`.backbone`): the frozen backbone turns each view into its last feature map
   once (or into the last stage's input when that stage is tuned too).
4. **Head** (:mod:`.head`): trained on the cached features.
5. **Artifact** (:mod:`.artifact`): exported, int8 when that holds, measured on the held-out
   voices.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from arinext.model.labels import SILENCE, UNKNOWN
from arinext.training.keywords.artifact import held_out_summary, publish
from arinext.training.keywords.backbone import load_backbone
from arinext.training.keywords.head import KeywordHead, KeywordNet, fit
from arinext.training.keywords.recipe import (
    KeywordRecipe,
    KeywordResult,
    ProgressCallback,
    head_name,
)
from arinext.training.keywords.speech import normalise_phrase, plan_speech, read_recording, speak
from arinext.training.keywords.views import (
    ViewJob,
    init_view_worker,
    map_in_processes,
    phrase_window,
    placed_clip,
    views,
    window_frontend,
)
from arinext.training.synth_speech import SAMPLE_RATE, derive_seed, espeak_version

__all__ = ["train_keywords"]

log = logging.getLogger(__name__)


def train_keywords(
    phrases: Sequence[str],
    out_dir: Path | str,
    *,
    recordings: Mapping[str, Sequence[Path]] | None = None,
    recipe: KeywordRecipe | None = None,
    name: str = "keywords",
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    backbone: Path | str | None = None,
) -> KeywordResult:
    """Train a keyword artifact for ``phrases`` and write it to ``out_dir``.

    ``recordings`` maps a phrase to the user's recordings of it (a few each are enough; they are
    augmented ``recipe.recording_copies`` times). ``progress`` is called as (stage, done, total);
    the function logs, never prints, so a server can run it in a worker process. ``backbone``
    is the artifact to build on (default: the shipped default model).
    """
    import torch

    from arinext.model.manifest import write_manifest
    from arinext.model.publish import destination_problem

    start = time.perf_counter()
    recipe = recipe or KeywordRecipe()
    report = progress or (lambda stage, done, total: None)
    workers = workers or len(os.sched_getaffinity(0))
    phrases = list(dict.fromkeys(normalise_phrase(p) for p in phrases))
    if not phrases:
        raise ValueError("give at least one phrase")
    recorded = {normalise_phrase(p): list(paths) for p, paths in (recordings or {}).items()}
    if unknown := sorted(set(recorded) - set(phrases)):
        raise ValueError(f"recordings of phrases not being trained: {', '.join(unknown)}")
    out = Path(out_dir)
    if problem := destination_problem(out, overwrite):
        raise FileExistsError(problem)
    classes = [*phrases, UNKNOWN, SILENCE]
    index = {label: i for i, label in enumerate(classes)}

    base = load_backbone(backbone)
    manifest = base.manifest
    plan = plan_speech(phrases, recipe, base.voice_seed())
    spoken = map_in_processes(speak, plan, workers, "synthesis", report)
    durations = [
        s.size / SAMPLE_RATE for u, s in zip(plan, spoken, strict=True) if u.label in phrases
    ]
    window = phrase_window(durations, recipe.margin_s, recipe.min_window_s)
    frontend = window_frontend(manifest.frontend, window)
    log.info(
        "phrases last %.2f s (median) to %.2f s (95th percentile): %.2f s windows",
        np.median(durations),
        np.percentile(durations, 95),
        window,
    )

    clips = [(s, u.label, u.held_out, u.voice) for u, s in zip(plan, spoken, strict=True)]
    for phrase, paths in recorded.items():
        clips += [(read_recording(p), phrase, False, f"recording:{p.name}") for p in paths]
    babble = [c[0] for c in clips if c[1] == UNKNOWN and not c[2]][:64]
    jobs: list[ViewJob] = []
    for i, (samples, label, held_out, voice) in enumerate(clips):
        copies = 0 if held_out else recipe.copies
        if voice.startswith("recording:"):
            copies = recipe.recording_copies
        jobs.append((samples, label != SILENCE, copies, derive_seed(recipe.seed, "view", i)))
    clip_views = map_in_processes(
        views,
        jobs,
        workers,
        "augmentation",
        report,
        init_view_worker,
        (recipe.seed, babble, frontend),
    )
    train = [i for i, c in enumerate(clips) if not c[2]]
    held = [i for i, c in enumerate(clips) if c[2]]
    x_train = np.concatenate([clip_views[i] for i in train])
    y_train = np.concatenate([np.full(len(clip_views[i]), index[clips[i][1]]) for i in train])

    tuned = recipe.stages - (recipe.tune == "last-stage")
    cached = base.features(x_train, base.stage_input(tuned), report, "embedding")
    torch.set_num_threads(workers)
    network = base.network()
    channels = network.num_features // 2 ** (len(network.stages) - recipe.stages)
    torch.manual_seed(recipe.seed)  # the head's first weights: the process starts unseeded
    head = KeywordHead(recipe.head, channels, len(classes), recipe.hidden, recipe.dropout)
    net = KeywordNet(network, recipe.stages, head, head_name(name))
    fit(net, cached, y_train, recipe, report)

    rng = np.random.default_rng(derive_seed(recipe.seed, "calibration"))
    picked = [int(i) for i in rng.choice(train, size=min(200, len(train)), replace=False)]
    calibration = [
        (placed_clip(clips[i][0], clips[i][1], frontend, i), clips[i][1]) for i in picked
    ]
    calibration += [(placed_clip(clips[i][0], clips[i][1], frontend, i), clips[i][1]) for i in held]
    check = set(range(len(picked), len(calibration)))
    extra = {
        "keywords": {
            "phrases": phrases,
            "recipe": asdict(recipe),
            "window_seconds": window,
            "phrase_seconds": {
                "median": round(float(np.median(durations)), 3),
                "p95": round(float(np.percentile(durations, 95)), 3),
                "max": round(float(np.max(durations)), 3),
            },
            "clips": {
                "synthesised_train": sum(1 for u in plan if not u.held_out),
                "synthesised_held_out": sum(1 for u in plan if u.held_out),
                "recordings": {p: len(v) for p, v in recorded.items()},
                "training_views": len(y_train),
            },
            "backbone": {"name": manifest.name, "sha256": manifest.sha256},
            "espeak_ng": espeak_version(),
        }
    }
    written = publish(
        net, out, name, manifest, frontend, classes, recipe, calibration, check, extra, overwrite
    )
    summary = held_out_summary(
        out,
        np.concatenate([clip_views[i] for i in held]),
        np.array([index[clips[i][1]] for i in held]),
        classes,
        [clips[i][3] for i in held],
        workers,
    )
    seconds = time.perf_counter() - start
    written.metrics["held_out_voices"] = summary
    written.metrics["train_seconds"] = round(seconds, 1)
    write_manifest(out, written)
    log.info("wrote %s (%s) in %.0f s", out, written.precision, seconds)
    return KeywordResult(out, classes, window, written.precision, seconds, summary)
