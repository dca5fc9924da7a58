"""``arinext train-keywords``: the command line of :mod:`arinext.training.keywords`.

A thin wrapper: phrases and a recordings folder in, tqdm bars while it runs, a summary of the
held-out voices at the end. ``--progress json`` prints, instead, one JSON object a line on stdout
for programs that run it (the demo's *Teach a word* tab): ``{"event": "progress", "stage": ...,
"done": ..., "total": ...}`` while a stage runs, then ``{"event": "result", "artifact": ...,
...}``. Registering it imports neither torch nor the recipe.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["JsonProgress", "read_recordings", "register"]

_AUDIO = (".wav", ".flac", ".ogg", ".mp3")


def _folder_phrase(name: str) -> str:
    return " ".join(re.findall(r"[a-z']+", name.lower().replace("_", " ").replace("-", " ")))


def read_recordings(root: Path, phrases: list[str]) -> dict[str, list[Path]]:
    """``ROOT/<phrase>/*.wav``: a folder per phrase, named by it (``lights_on`` or
    ``lights on``); folders of other names are refused, so a typo is not silently ignored."""
    wanted = {_folder_phrase(p): p for p in phrases}
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        phrase = wanted.get(_folder_phrase(folder.name))
        if phrase is None:
            raise SystemExit(f"error: {folder} names none of the phrases {phrases}")
        found[phrase] = sorted(f for f in folder.iterdir() if f.suffix.lower() in _AUDIO)
    return found


class _Bars:
    """One tqdm bar per stage of the run."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="clip" if stage != "training" else "step")
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class JsonProgress:
    """Progress as JSON lines on stdout: each stage's start and end, and every whole percent."""

    def __init__(self) -> None:
        self.last: tuple[str, int] = ("", -1)

    def __call__(self, stage: str, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if (stage, percent) != self.last or done == total:
            self.last = (stage, percent)
            _emit({"event": "progress", "stage": stage, "done": done, "total": total})

    def close(self) -> None:
        pass


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _run(args: argparse.Namespace) -> int:
    from arinext.training.keywords import KeywordRecipe, train_keywords

    recordings = read_recordings(args.recordings, args.phrases) if args.recordings else None
    chosen = {
        k: getattr(args, k) for k in ("per_phrase", "copies", "epochs", "head") if getattr(args, k)
    }
    if args.head == "linear":
        chosen["stages"] = 4
    recipe = KeywordRecipe(seed=args.seed, tune=args.tune, int8=not args.fp32, **chosen)
    bars = JsonProgress() if args.progress == "json" else _Bars()
    try:
        result = train_keywords(
            args.phrases,
            args.out,
            recordings=recordings,
            recipe=recipe,
            name=args.name or args.out.name,
            workers=args.workers,
            progress=bars,
            overwrite=args.overwrite,
            backbone=args.backbone,
        )
    finally:
        bars.close()
    held = result.held_out
    if args.progress == "json":
        _emit(
            {
                "event": "result",
                "artifact": str(result.artifact),
                "labels": result.labels,
                "precision": result.precision,
                "window_seconds": result.window_seconds,
                "seconds": round(result.seconds, 1),
                "held_out": held,
            }
        )
        return 0
    lines = [
        f"wrote {result.artifact} ({result.precision}, {result.window_seconds:.2f} s windows) "
        f"in {result.seconds:.0f} s",
        f"held-out voices: phrases top-1 {held['keyword_top1']:.1%} of {held['keyword_clips']} "
        f"clips; other speech and noise answered as a phrase (score >= "
        f"{held['false_alarm_threshold']}) {held['false_alarm_rate']:.1%} of "
        f"{held['non_keyword_clips']}",
        *(f"  {p}: {row['top1']:.1%} of {row['clips']}" for p, row in held["per_phrase"].items()),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train-keywords`` to the ``arinext`` command line."""
    p = subparsers.add_parser(
        "train-keywords",
        help="train a keyword artifact for your own phrases on the default model's backbone",
        description="Synthesise the phrases with espeak-ng (plus your recordings), train a new "
        "head on the default model and write a verified artifact (int8 when it holds).",
    )
    p.add_argument("phrases", nargs="+", metavar="PHRASE", help='e.g. "lights on" "next slide"')
    p.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    p.add_argument(
        "--recordings",
        type=Path,
        default=None,
        metavar="DIR",
        help="your recordings: DIR/<phrase>/*.wav, a folder per phrase (lights_on or 'lights on')",
    )
    p.add_argument(
        "--name",
        help="the artifact's name (default: the --out folder's, as the model repository wants)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-phrase", type=int, help="espeak-ng renditions per phrase (default 480)")
    p.add_argument("--copies", type=int, help="augmented views of each clip (default 3)")
    p.add_argument("--epochs", type=int, help="passes over the cached features (default 40)")
    p.add_argument(
        "--head",
        choices=("temporal", "linear"),
        help="temporal (default): a convolution over time on the backbone's third stage; "
        "linear: global pooling and a linear layer on its last stage (the default model's head)",
    )
    p.add_argument(
        "--tune",
        choices=("head", "last-stage"),
        default="head",
        help="train the head alone (default) or the backbone's last stage too",
    )
    p.add_argument(
        "--backbone",
        type=Path,
        default=None,
        metavar="DIR",
        help="the fp32 speech artifact to build on (default: the shipped default model's fp32 "
        "export), e.g. one trained by `make default-model` on a full Speech Commands download",
    )
    p.add_argument("--fp32", action="store_true", help="do not try int8")
    p.add_argument(
        "--progress",
        choices=("bars", "json"),
        default="bars",
        help="bars (default) or json: one JSON object a line on stdout (stage, done, total; "
        "then the artifact and the held-out summary), for programs that run the command",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing artifact")
    p.set_defaults(func=_run)
