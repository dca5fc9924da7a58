"""Issue #36's measurements of ``arinext train-keywords``: wall time, flite/Festival, recordings.

Trains a keyword artifact (timed, wall clock) and measures it as the service runs it (ONNX
Runtime on the artifact's own front-end, one window per clip):

- **out-of-domain voices**: every phrase said twice by each flite and Festival voice
  (``arinext.training.synth_ood``: never trained on), placed in the window, clean and under each
  degradation of ``arinext.training.waveform_augment.CONDITIONS``: top-1 over the phrases, and the
  share of held-out words (``arinext.training.vocabulary.HELD_OUT_WORDS``) answered as a phrase;
- **recorded speech**: the held-out TEST speakers of the recordings folder (speaker split of
  ``arinext.training.datasets.recordings``): the share of their 35-word clips answered as a phrase
  (score >= 0.5; clips of a word that is itself a phrase are left out), and, for phrases that
  are Speech Commands words, their top-1 on those speakers' clips of it.

``--user-recordings WORD:SPEAKER:N`` adds N recordings of WORD by SPEAKER (a training speaker)
as the user's own recordings, for the "a few recordings help" measurement; ``--backbone DIR``
builds on another artifact (one trained with ``data.withhold_words``, for that measurement).

    .venv/bin/python benchmarks/train_keywords.py --out /tmp/kw "lights on" "lights off" \
        "next slide" [--recordings ../shared/speech_commands_subset] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from arinext.model.frontend import clip_view
from arinext.model.labels import UNKNOWN
from arinext.model.scores import probabilities
from arinext.service.loading import LoadedModel, load_model
from arinext.training.datasets.recordings import RecordedClip, list_recordings, split_of
from arinext.training.keywords import KeywordRecipe, train_keywords
from arinext.training.synth_ood import OodItem, ood_voices, read_wav, speak_ood
from arinext.training.synth_speech import SAMPLE_RATE, derive_seed, trim
from arinext.training.vocabulary import HELD_OUT_WORDS
from arinext.training.waveform_augment import CONDITIONS, degrade

log = logging.getLogger("train_keywords")


def _scores(model: LoadedModel, clips: list[np.ndarray]) -> np.ndarray:
    cfg = model.manifest.frontend
    views = np.stack([clip_view(c.astype(np.float32), 0, cfg) for c in clips])[:, None]
    (head,) = model.manifest.heads
    logits = np.concatenate(
        [model.run(views[s : s + 64])[head.name] for s in range(0, len(views), 64)]
    )
    return probabilities(logits, "softmax")


def _place(speech: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    speech = speech[:n]
    clip = np.zeros(n, dtype=np.float32)
    offset = int(rng.integers(0, n - speech.size + 1))
    clip[offset : offset + speech.size] = speech
    return clip * np.float32(10 ** (rng.uniform(-6, -1) / 20) / (np.abs(clip).max() + 1e-9))


def out_of_domain(model: LoadedModel, phrases: list[str], seed: int = 0) -> dict:
    """flite and Festival voices: phrase top-1 and false accepts per condition."""
    items = [
        OodItem(engine, voice, phrase, phrase, k)
        for engine, voice in ood_voices()
        for phrase in phrases
        for k in range(2)
    ]
    items += [
        OodItem(engine, voice, UNKNOWN, word, k)
        for engine, voice in ood_voices()
        for k, word in enumerate(HELD_OUT_WORDS)
        if word not in phrases
    ]
    n = model.manifest.frontend.clip_samples
    with tempfile.TemporaryDirectory() as tmp:
        raw = speak_ood(items, seed, Path(tmp))
        placed = [
            _place(trim(read_wav(raw[item]), 40.0), n, np.random.default_rng(i))
            for i, item in enumerate(items)
        ]
    (head,) = model.manifest.heads
    labels = head.labels
    truth = np.array([labels.index(item.word) for item in items])
    said = np.array([item.word in phrases for item in items])
    result: dict[str, Any] = {}
    for c, condition in enumerate(CONDITIONS):
        clips = [
            degrade(x, SAMPLE_RATE, condition, derive_seed(seed, i, c))
            for i, x in enumerate(placed)
        ]
        probs = _scores(model, clips)
        top = probs.argmax(axis=1)
        accepted = (top < len(phrases)) & (probs.max(axis=1) >= 0.5)
        result[condition] = {
            "phrase_top1": float((top == truth)[said].mean()),
            "phrase_clips": int(said.sum()),
            "false_accepts": float(accepted[~said].mean()),
            "other_clips": int((~said).sum()),
        }
    result["voices"] = [f"{e}:{v}" for e, v in ood_voices()]
    return result


def _read(clips: list[RecordedClip]) -> list[np.ndarray]:
    from arinext.model.audio_io import read_file, resample

    audio = []
    for clip in clips:
        samples, rate = read_file(clip.path)
        audio.append(resample(samples, rate, SAMPLE_RATE))
    return audio


def recorded(
    model: LoadedModel,
    phrases: list[str],
    root: Path,
    unheard: bool = False,
    user: str | None = None,
) -> dict:
    """Held-out TEST speakers' recordings: false accepts, and top-1 of phrases that are words.

    ``unheard``: the backbone never heard the phrases' words (trained with
    ``data.withhold_words``), so every speaker of every split but the ``user`` (whose
    recordings were trained on) is new to the phrases, and their top-1 is measured on all of
    them as well.
    """
    clips = [c for c in list_recordings(root, "test") if not c.word.startswith("_")]
    probs = _scores(model, _read(clips))
    top = probs.argmax(axis=1)
    accepted = (top < len(phrases)) & (probs.max(axis=1) >= 0.5)
    other = np.array([c.word not in phrases for c in clips])
    result: dict = {
        "speakers": len({c.speaker for c in clips}),
        "false_accepts": float(accepted[other].mean()),
        "other_clips": int(other.sum()),
    }
    for i, phrase in enumerate(phrases):
        mine = np.array([c.word == phrase for c in clips])
        if mine.any():
            result.setdefault("phrase_top1", {})[phrase] = {
                "top1": float((top[mine] == i).mean()),
                "clips": int(mine.sum()),
            }
    listed = list_recordings(root) if unheard else []
    others = [c for c in listed if c.word in phrases and c.speaker != user]
    if others:
        top = _scores(model, _read(others)).argmax(axis=1)
        for i, phrase in enumerate(phrases):
            mine = np.array([c.word == phrase for c in others])
            said = [c.speaker for c in others if c.word == phrase]
            if not said:  # not a recorded word
                continue
            right = (top[mine] == i).tolist()
            result.setdefault("phrase_top1_every_other_speaker", {})[phrase] = {
                "top1": float(np.mean(right)),
                "clips": len(said),
                "speakers": len(set(said)),
                # per speaker [right, clips]: runs with different users compare on shared clips
                "by_speaker": {
                    who: [
                        sum(r for w, r in zip(said, right, strict=True) if w == who),
                        said.count(who),
                    ]
                    for who in sorted(set(said))
                },
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phrases", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recordings", type=Path, default=Path("../shared/speech_commands_subset"))
    parser.add_argument("--user-recordings", default=None, metavar="WORD:SPEAKER:N")
    parser.add_argument("--backbone", type=Path, default=None, help="default: the shipped model")
    parser.add_argument(
        "--unheard",
        action="store_true",
        help="the backbone never heard the phrases (data.withhold_words): also measure their "
        "top-1 on every speaker but --user-recordings' one, in every split",
    )
    parser.add_argument("--tune", choices=("head", "last-stage"), default="head")
    parser.add_argument(
        "--head",
        choices=("temporal", "linear"),
        default=KeywordRecipe.head,
        help="linear: the first version's head (global pooling on the last stage, 120 phrase "
        "renditions; give --epochs 30 for its training)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=KeywordRecipe.epochs)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="any other KeywordRecipe knob, e.g. --set per_phrase=480 (repeatable)",
    )
    parser.add_argument("--no-ood", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.unheard and args.backbone is None:
        parser.error("--unheard needs --backbone: the shipped model heard every recorded word")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    user = None
    if args.user_recordings:
        word, speaker, count = args.user_recordings.split(":")
        paths = sorted(
            c.path
            for c in list_recordings(args.recordings, "train")
            if c.word == word and c.speaker == speaker
        )[: int(count)]
        if len(paths) < int(count) or split_of(speaker) != "train":
            raise SystemExit(f"{speaker} has {len(paths)} training recordings of {word}")
        user = {word: paths}
    first: dict = {}
    if args.head == "linear":
        first = {"head": "linear", "stages": 4, "per_phrase": 120}
    defaults = KeywordRecipe()
    for knob, _, value in (item.partition("=") for item in args.set):
        first[knob] = type(getattr(defaults, knob))(value)
    start = time.perf_counter()
    result = train_keywords(
        args.phrases,
        args.out,
        recordings=user,
        recipe=KeywordRecipe(seed=args.seed, tune=args.tune, epochs=args.epochs, **first),
        overwrite=True,
        backbone=args.backbone,
    )
    wall = time.perf_counter() - start
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    report = {
        "phrases": args.phrases,
        "wall_seconds": round(wall, 1),
        "cpu": next(
            (line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line), ""
        ),
        "user_recordings": {k: [p.name for p in v] for k, v in (user or {}).items()},
        "backbone": str(args.backbone or "shipped default model"),
        "tune": args.tune,
        "head": args.head,
        "recipe": {k: v for k, v in first.items() if k not in ("head", "stages")},
        "epochs": args.epochs,
        "precision": result.precision,
        "window_seconds": result.window_seconds,
        "held_out_espeak": result.held_out,
    }
    print(f"train-keywords wall time: {wall:.1f} s ({result.precision}, {args.tune})")
    model = load_model(args.out)
    if not args.no_ood:
        report["out_of_domain"] = out_of_domain(model, result.labels[: len(args.phrases)])
    speaker = args.user_recordings.split(":")[1] if args.user_recordings else None
    report["recorded"] = recorded(
        model, result.labels[: len(args.phrases)], args.recordings, args.unheard, speaker
    )
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
