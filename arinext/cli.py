"""The ``arinext`` command line: every package's sub-commands under one parser.

Each package registers its own sub-commands with a ``register(subparsers)`` function (``model``:
info, import-checkpoint; ``training``: train, evaluate, export, synth-speech-commands;
``service``: serve). A new command is one more module in ``COMMAND_MODULES``. Registering must not
import torch: command bodies import what they need, so ``arinext serve`` runs in the torch-free
image.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Sequence

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

# Modules whose ``register(subparsers)`` adds sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "model.commands",
    "model.runtime_cli",
    "training.cli",
    "training.synth_speech",
    "service.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every package's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="arinext",
        description="Train, export and serve AudioRepInceptionNeXt audio classifiers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)
