"""``arinext synth-speech-commands``: the espeak-ng training set, or (``--ood``) the flite and
Festival out-of-domain test set.

The command line of :mod:`arinext.training.synth_speech` and :mod:`arinext.training.synth_ood`, kept
apart so neither imports the other's CLI (the test set is made from the training set's plan).
Torch-free: registered in the serving image too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from arinext.training import synth_speech
from arinext.training.synth_ood import synthesize_ood
from arinext.training.synth_speech import synthesize_dataset

__all__ = ["register"]


def _range(kind: type) -> object:
    """argparse ``type`` for ``MIN,MAX`` pairs."""

    def parse(text: str) -> tuple:
        low, high = (kind(v) for v in text.split(","))
        if low > high:
            raise argparse.ArgumentTypeError(f"{text}: MIN must not exceed MAX")
        return (low, high)

    return parse


def _run(args: argparse.Namespace) -> int:
    knobs = {
        name: getattr(args, name)
        for name in ("rate_wpm", "pitch", "amplitude", "snr_db", "peak_dbfs")
        if getattr(args, name) is not None
    }
    if args.ood:
        synthesize_ood(args.out_dir, seed=args.seed, per_voice=args.per_voice, workers=args.workers)
        return 0
    synthesize_dataset(
        args.out_dir,
        seed=args.seed,
        per_voice=args.per_voice,
        unknown_per_voice=args.unknown_per_voice,
        silence=args.silence,
        words=args.words.split(",") if args.words else None,
        variants=args.variants.split(",") if args.variants else None,
        workers=args.workers,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        **knobs,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synth-speech-commands`` to the ``arinext`` command line."""
    p = subparsers.add_parser(
        "synth-speech-commands",
        help="synthesise a Speech Commands v2 look-alike dataset with espeak-ng",
        description=synth_speech.__doc__.split("\n\n")[0] if synth_speech.__doc__ else None,
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-voice", type=int, default=4, help="renditions per word and variant")
    p.add_argument(
        "--unknown-per-voice",
        type=int,
        default=0,
        help="renditions of non-keyword speech (class _unknown_) per variant (default 0: none)",
    )
    p.add_argument(
        "--silence", type=int, default=0, help="non-speech clips (class _silence_; default 0)"
    )
    p.add_argument(
        "--ood",
        action="store_true",
        help="write the out-of-domain test set instead: flite and Festival voices, clean and "
        "degraded (never train on it)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    p.add_argument("--words", default=None, help="comma-separated subset of the 35 words")
    p.add_argument("--variants", default=None, help="comma-separated subset of voice variants")
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--rate-wpm", type=_range(int), default=None, metavar="MIN,MAX")
    p.add_argument("--pitch", type=_range(int), default=None, metavar="MIN,MAX")
    p.add_argument("--amplitude", type=_range(int), default=None, metavar="MIN,MAX")
    p.add_argument("--snr-db", type=_range(float), default=None, metavar="MIN,MAX")
    p.add_argument("--peak-dbfs", type=_range(float), default=None, metavar="MIN,MAX")
    p.set_defaults(func=_run)
