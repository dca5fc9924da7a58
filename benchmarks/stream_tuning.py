"""Tune the stream's detection defaults (hop, votes, threshold, debounce) on held-out speakers.

Builds ten-second scenes of three recorded keywords over held-out room noise
(:mod:`arinext.training.scenes`, 15-30 dB SNR) from a recordings folder, scores every window a
stream would score at each hop (the service's own front-end, ``arinext.service.prepare.features``,
and the artifact through ONNX Runtime), runs the stream's
:class:`~arinext.service.detection.Debouncer` over them for each number of votes, threshold and
debounce, and prints one row per setting: keywords detected, wrong detections per minute of audio.
Windows are scored once per hop and reused for every other setting, so the grid costs little more
than one pass. ``--seed 4,5`` pools the scenes of several seeds (single runs of 100-200 scenes
move a setting's wrong detections a minute by a third).

``--record`` writes the chosen setting into the artifact's manifest (``detection``), where every
entry point of the service takes it as the model's default: the most words detected with at most
``--max-wrong`` wrong detections a minute and the threshold no lower than ``--min-threshold``,
among the settings searched at one hop and one debounce. Choose on validation speakers.

    python benchmarks/stream_tuning.py --recordings ../shared/speech_commands_subset \\
        --model artifacts/speech-commands-b0 --scenes 60
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arinext.model.backends import open_session  # noqa: E402
from arinext.model.manifest import (  # noqa: E402
    MODEL_FILE,
    DetectionSettings,
    verify_artifact,
    write_manifest,
)
from arinext.model.scores import softmax  # noqa: E402
from arinext.service.detection import DEFAULT_VOTES, Debouncer  # noqa: E402
from arinext.service.prepare import features, window_starts  # noqa: E402
from arinext.training.scenes import build_scenes, match_detections  # noqa: E402


def window_scores(
    session, manifest, samples: np.ndarray, hop: float
) -> list[tuple[float, float, str, float]]:
    """(start, end, top label, its score) of every window a stream at ``hop`` scores."""
    cfg = manifest.frontend
    view = cfg.clip_samples
    starts = window_starts(samples.size, cfg, hop)  # a stream's windows, as the service cuts them
    head = manifest.heads[0]
    logits = session.run([head.output], {manifest.input: features(samples, starts, cfg)})[0]
    probs = softmax(np.asarray(logits))
    top = probs.argmax(axis=1)
    rate = cfg.sample_rate
    return [
        (s / rate, (s + view) / rate, head.labels[int(t)], float(p[t]))
        for s, t, p in zip(starts, top, probs, strict=True)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=Path, required=True, help="Speech Commands layout")
    parser.add_argument("--model", type=Path, required=True, help="artifact directory")
    parser.add_argument("--scenes", type=int, default=60)
    parser.add_argument("--seed", default="1", help="scene seed, or several: 4,5")
    parser.add_argument("--split", default="test", help="speakers' split (test or validation)")
    parser.add_argument("--hops", default="0.1,0.25,0.5")
    parser.add_argument("--votes", default=str(DEFAULT_VOTES), help="e.g. 2,3")
    parser.add_argument("--thresholds", default="0.5,0.6,0.7,0.8,0.9")
    parser.add_argument("--debounces", default="0.5,1.0,1.5")
    parser.add_argument("--record", action="store_true", help="write the chosen setting")
    parser.add_argument("--max-wrong", type=float, default=1.0, help="per minute, for --record")
    parser.add_argument("--min-threshold", type=float, default=0.5, help="for --record")
    args = parser.parse_args()
    hops = [float(h) for h in args.hops.split(",")]
    if args.record and (len(hops) != 1 or len(args.debounces.split(",")) != 1):
        parser.error("--record chooses among one hop and one debounce")

    manifest = verify_artifact(args.model)
    session = open_session(args.model / MODEL_FILE, threads=1)
    seeds = [int(seed) for seed in args.seed.split(",")]
    scenes = [
        scene
        for seed in seeds
        for scene in build_scenes(args.recordings, args.scenes, split=args.split, seed=seed)
    ]
    minutes = sum(s.seconds for s in scenes) / 60
    said = sum(len(s.words) for s in scenes)
    print(f"{len(scenes)} scenes ({minutes:.1f} min, {said} keywords) of {args.split} speakers")
    print("| hop s | votes | threshold | debounce s | detected | wrong / min |")
    print("|---|---|---|---|---|---|")
    results: list[tuple[int, float, float, float]] = []  # votes, threshold, detected, wrong/min
    for hop in hops:
        scored = [window_scores(session, manifest, s.samples, hop) for s in scenes]
        settings = itertools.product(
            (int(v) for v in args.votes.split(",")),
            (float(t) for t in args.thresholds.split(",")),
            (float(d) for d in args.debounces.split(",")),
        )
        for votes, threshold, debounce in settings:
            found = wrong = 0
            for scene, windows in zip(scenes, scored, strict=True):
                gate = Debouncer("", hop, threshold, debounce, votes=votes)
                hits = [
                    (d.label, d.start, d.end)
                    for d in (gate.update(lab, sc, st, en) for st, en, lab, sc in windows)
                    if d is not None
                ]
                f, w = match_detections(scene.words, hits)
                found, wrong = found + f, wrong + w
            print(
                f"| {hop} | {votes} | {threshold} | {debounce} | {found / said:.1%} "
                f"| {wrong / minutes:.2f} |"
            )
            results.append((votes, threshold, found / said, wrong / minutes))
    if args.record:
        allowed = [r for r in results if r[3] <= args.max_wrong and r[1] >= args.min_threshold]
        if not allowed:
            print(f"no setting keeps to {args.max_wrong} wrong a minute: nothing recorded")
            return 1
        best_votes, best_threshold, detected, per_minute = max(allowed, key=lambda r: (r[2], -r[3]))
        manifest.detection = DetectionSettings(
            threshold=best_threshold,
            votes=best_votes,
            tuned_on=(
                f"{len(scenes)} ten-second scenes of {args.split} speakers' recorded keywords "
                f"over held-out room noise (training/scenes.py, seeds {args.seed}): the most "
                f"words detected with at most {args.max_wrong} wrong a minute, threshold >= "
                f"{args.min_threshold}"
            ),
            measured={
                "detected": round(detected, 4),
                "wrong_per_minute": round(per_minute, 3),
                "hop_seconds": hops[0],
                "debounce_seconds": float(args.debounces),
                "keywords": said,
                "command": "python benchmarks/stream_tuning.py " + " ".join(sys.argv[1:]),
            },
        )
        write_manifest(args.model, manifest)
        print(f"recorded votes {best_votes}, threshold {best_threshold} in {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
