"""Which non-keyword speech a keyword model takes for a keyword: false accepts by what was said.

``arinext evaluate`` counts the ``_unknown_`` clips of a split answered as a keyword (score at
least 0.5) as one rate. This splits that rate by what each clip says, recovered from the
dataset's own recipe (``arinext.training.synth_speech.spoken_text``, no synthesis): single near
misses (words one sound from a keyword, ``NEAR_MISSES``), other single words, and phrases of two
or three words. Clips are scored as ``arinext evaluate`` scores them (the artifact's test views,
softmax averaged over views, ONNX Runtime as served). Prints one row per kind and the most
frequent (text, keyword) pairs.

    python benchmarks/unknown_false_accepts.py --model service/default_model \\
        --data-root data/synth-sc --split test
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arinext.model.audio_io import read_file  # noqa: E402
from arinext.model.backends import open_session  # noqa: E402
from arinext.model.frontend import log_mel_views  # noqa: E402
from arinext.model.labels import UNKNOWN, is_keyword  # noqa: E402
from arinext.model.manifest import MODEL_FILE, verify_artifact  # noqa: E402
from arinext.model.scores import softmax  # noqa: E402
from arinext.training.synth_speech import (  # noqa: E402
    Item,
    read_recipe,
    spoken_text,
    voice_hash,
)
from arinext.training.vocabulary import HOMOPHONES, NEAR_MISSES  # noqa: E402

LISTS = {"test": "testing_list.txt", "validation": "validation_list.txt"}


def kind_of(text: str) -> str:
    """``phrase``, ``near miss`` or ``other word``. Homophones count as near misses: a dataset
    made before one was moved out of the near misses (as "foreword" was) still says it."""
    if " " in text:
        return "phrase"
    return "near miss" if text in NEAR_MISSES or text in HOMOPHONES else "other word"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="artifact directory")
    parser.add_argument("--data-root", type=Path, required=True, help="synth-speech-commands")
    parser.add_argument("--split", choices=sorted(LISTS), default="test")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--top", type=int, default=15, help="(text, keyword) pairs to list")
    args = parser.parse_args()

    manifest = verify_artifact(args.model)
    session = open_session(args.model / MODEL_FILE, threads=1)
    head = manifest.heads[0]
    recipe = read_recipe(args.data_root)
    split_variants = recipe.voices.get(args.split, [])
    variant_of = {voice_hash(v): v for v in split_variants}
    listed = (args.data_root / LISTS[args.split]).read_text(encoding="utf-8").split()
    clips = [p for p in listed if p.startswith(f"{UNKNOWN}/")]
    if not clips:
        raise SystemExit(f"{args.data_root}: no {UNKNOWN} clips in the {args.split} split")
    counts: collections.defaultdict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    pairs: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for relpath in clips:
        named, _, k = Path(relpath).stem.partition("_nohash_")
        if named not in variant_of:
            raise SystemExit(f"{relpath}: not a voice of the recipe's {args.split} split")
        item = Item(UNKNOWN, variant_of[named], int(k), args.split)
        text = spoken_text(item, recipe)
        samples, rate = read_file(args.data_root / relpath)
        if rate != manifest.frontend.sample_rate:
            raise SystemExit(
                f"{relpath}: {rate} Hz, the model hears {manifest.frontend.sample_rate}"
            )
        views = log_mel_views(samples, manifest.frontend)
        logits = session.run([head.output], {manifest.input: views})[0]
        probs = softmax(np.asarray(logits)).mean(axis=0)
        top = int(probs.argmax())
        accepted = is_keyword(head.labels[top]) and probs[top] >= args.threshold
        kind = kind_of(text)
        counts[kind][0] += int(accepted)
        counts[kind][1] += 1
        if accepted:
            pairs[(kind, text, head.labels[top])] += 1
    said = sum(n for _, n in counts.values())
    wrong = sum(a for a, _ in counts.values())
    print(
        f"{manifest.name} ({manifest.precision}), {args.split} split of {args.data_root}: "
        f"{said} {UNKNOWN} clips, score >= {args.threshold}\n"
    )
    print("| what was said | clips | answered as a keyword | share |\n|---|---:|---:|---:|")
    for kind in ("near miss", "other word", "phrase"):
        accepted, total = counts.get(kind, [0, 0])
        share = f"{accepted / total:.1%}" if total else "-"
        print(f"| {kind} | {total} | {accepted} | {share} |")
    print(f"| all | {said} | {wrong} | {wrong / said:.1%} |\n")
    print("| what was said | taken for | clips |\n|---|---|---:|")
    for (kind, text, label), n in pairs.most_common(args.top):
        print(f"| {text} ({kind}) | {label} | {n} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
