"""The ``arinext`` command line: every package's sub-commands under one parser.

Each package registers its own sub-commands with a ``register(subparsers)`` function (``model``:
info, import-checkpoint; ``training``: train, evaluate, export, synth-speech-commands,
train-keywords; ``service``: serve). A new command is one more module in ``COMMAND_MODULES``.
Registering must not import torch: command bodies import what they need, so ``arinext serve``
runs in the torch-free image.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

# Modules whose ``register(subparsers)`` adds sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "arinext.model.commands",
    "arinext.model.runtime_cli",
    "arinext.training.cli",
    "arinext.training.synth_cli",
    "arinext.training.keywords_cli",
    "arinext.service.cli",
    "arinext.service.predict_cli",
)
# Commands that run PyTorch, and the modules only the ``train`` extra installs: in the serving
# environment these commands say which extra to install (exit 2) instead of a traceback.
TRAIN_COMMANDS = ("info", "import-checkpoint", "train", "evaluate", "export", "train-keywords")
TRAIN_EXTRA_MODULES = frozenset({"torch", "onnx", "yaml", "pandas", "h5py", "matplotlib"})
EXIT_MISSING_EXTRA = 2
_INSTALL_TRAIN = "install the train extra: pip install 'arinext[train]'"


def _version() -> str:
    try:
        return metadata.version("arinext")
    except metadata.PackageNotFoundError:
        return "unknown (not installed; run from a checkout)"


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every package's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="arinext",
        description="Train, export and serve AudioRepInceptionNeXt audio classifiers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    if not _has_torch():
        for name in TRAIN_COMMANDS:
            command = subparsers.choices[name]
            command.description = (
                f"Not available in this environment: it needs PyTorch; {_INSTALL_TRAIN}. "
                f"{command.description or ''}"
            )
    return parser


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def _missing_extra(command: str, module: str) -> int:
    sys.stderr.write(
        f"error: arinext {command} needs {module}, which this environment lacks (the serving "
        f"install leaves training out); {_INSTALL_TRAIN}\n"
    )
    return EXIT_MISSING_EXTRA


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    asks_help = "-h" in argv or "--help" in argv
    if command in TRAIN_COMMANDS and not asks_help and not _has_torch():
        return _missing_extra(command, "torch")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in TRAIN_EXTRA_MODULES:
            raise
        return _missing_extra(args.command, missing)
