"""How a stream's windows score a word, by where the word lies in them.

Builds the same scenes as ``stream_tuning.py`` (three recorded keywords of held-out speakers over
held-out room noise, 15-30 dB SNR), scores every window a stream at ``--hop`` would, and for each
window near a word said prints, by the distance between the word's voice centre and the window's
centre: how often the window's top-1 is the word, how often it is the word with a score at or
above ``--threshold`` (what a detection needs of one window of its run), and the mean score when
right.
Then the same for the words' clips alone (clean, one window each). It tells a model's accuracy in
noise from its confidence, and both from where the windows fall.

    python benchmarks/window_offsets.py --recordings ../shared/speech_commands_subset \\
        --model service/default_model --split validation
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from stream_tuning import window_scores  # noqa: E402

from arinext.model.audio_io import read_file  # noqa: E402
from arinext.model.backends import open_session  # noqa: E402
from arinext.model.frontend import clip_view  # noqa: E402
from arinext.model.labels import SILENCE  # noqa: E402
from arinext.model.manifest import MODEL_FILE, verify_artifact  # noqa: E402
from arinext.model.scores import softmax  # noqa: E402
from arinext.service.detection import DEFAULT_THRESHOLD  # noqa: E402
from arinext.training.datasets.recordings import list_recordings  # noqa: E402
from arinext.training.scenes import build_scenes  # noqa: E402

BINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)


def _row(name: str, right: np.ndarray, scores: np.ndarray, threshold: float) -> str:
    sure = right & (scores >= threshold)
    mean = f"{scores[right].mean():.2f}" if right.any() else "-"
    return f"| {name} | {right.size} | {right.mean():.1%} | {sure.mean():.1%} | {mean} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=Path, required=True, help="Speech Commands layout")
    parser.add_argument("--model", type=Path, required=True, help="artifact directory")
    parser.add_argument("--split", default="validation", help="speakers' split")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hop", type=float, default=0.25)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args()

    manifest = verify_artifact(args.model)
    session = open_session(args.model / MODEL_FILE, threads=1)
    scenes = build_scenes(args.recordings, args.scenes, split=args.split, seed=args.seed)
    offsets, right, scores = [], [], []
    for scene in scenes:
        windows = window_scores(session, manifest, scene.samples, args.hop)
        for word in scene.words:
            centre = (word.start + word.end) / 2
            for start, end, label, score in windows:
                offset = abs(centre - (start + end) / 2)
                if offset < BINS[-1]:
                    offsets.append(offset)
                    right.append(label == word.label)
                    scores.append(score)
    at, ok, sc = np.array(offsets), np.array(right), np.array(scores)
    said = sum(len(s.words) for s in scenes)
    print(f"{len(scenes)} scenes, {said} words of {args.split} speakers, hop {args.hop} s")
    print("| word centre from window centre, s | windows | top-1 right | right and >= "
          f"{args.threshold} | mean score when right |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for low, high in itertools.pairwise(BINS):
        inside = (at >= low) & (at < high)
        print(_row(f"{low:.2f}-{high:.2f}", ok[inside], sc[inside], args.threshold))

    cfg, head = manifest.frontend, manifest.heads[0]
    clips = [c for c in list_recordings(args.recordings, args.split) if c.word != SILENCE]
    views = np.stack([clip_view(read_file(c.path)[0], 0, cfg) for c in clips])[:, None]
    logits = np.concatenate(
        [
            session.run([head.output], {manifest.input: views[i : i + 64]})[0]
            for i in range(0, len(views), 64)
        ]
    )
    probs = softmax(logits)
    top = probs.argmax(axis=1)
    clean_right = np.array([head.labels[t] == c.word for t, c in zip(top, clips, strict=True)])
    print(_row("the clips alone, clean", clean_right, probs.max(axis=1), args.threshold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
