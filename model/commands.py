"""The ``model`` package's sub-commands: ``arinext info`` and ``arinext import-checkpoint``.

Registering happens for every ``arinext`` invocation, including ``arinext serve`` in the
torch-free image, so this module imports no torch: each command body imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from arinext.model.manifest import ReparamLevel

__all__ = ["register", "run_import_checkpoint", "run_info"]

_EXIT_ERROR = 2  # argparse's code for bad usage; a bad checkpoint is the user's input too
_MEL_BINS = 128


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``info`` and ``import-checkpoint`` to the ``arinext`` parser."""
    info = subparsers.add_parser(
        "info",
        help="parameters and multiply-adds of each architecture at each re-parameterisation level",
        description="Parameter and multiply-add (fvcore-style GMACs) counts of one view, in "
        "train form, paper-merged form (mixers merged) and full fold (no BatchNorm left).",
    )
    info.add_argument(
        "--architecture",
        default="all",
        help="b0, b1, b1_2d, slowfast_r50 or all (default: all)",
    )
    info.add_argument("--classes", type=int, default=309, help="classes of the head (309)")
    info.add_argument("--frames", type=int, default=512, help="time frames of the input (512)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=run_info)

    imp = subparsers.add_parser(
        "import-checkpoint",
        help="turn an authors' AudioRepInceptionNeXt checkpoint into a servable artifact",
        description="Load an authors' .pyth checkpoint strictly (weights_only), export it to "
        "ONNX, verify ONNX Runtime against PyTorch and write the artifact directory. Nothing is "
        "written when any check fails (exit code 2).",
    )
    imp.add_argument("checkpoint", type=Path, help="the authors' .pyth checkpoint")
    imp.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    imp.add_argument(
        "--labels",
        help="label preset, label set or JSON file (default: the checkpoint's dataset)",
    )
    imp.add_argument("--name", help="artifact name (default: <architecture>-<dataset>)")
    imp.add_argument(
        "--level",
        choices=[level.value for level in (ReparamLevel.PAPER, ReparamLevel.FULL)],
        default=ReparamLevel.FULL.value,
        help="re-parameterisation: paper (mixers merged) or full (no BatchNorm left; default)",
    )
    imp.add_argument(
        "--overwrite", action="store_true", help="replace --out even if it is not an artifact"
    )
    imp.set_defaults(func=run_import_checkpoint)


def _complexity_row(architecture: str, classes: int, frames: int) -> dict[str, Any]:
    from arinext.model.complexity import count_macs, count_params
    from arinext.model.registry import create_model
    from arinext.model.reparam import reparameterize_model

    model = create_model(architecture, {"classes": classes}).eval()
    forms = {ReparamLevel.NONE: model}
    # The Slow-Fast baseline has no multi-branch mixers: the paper compares it in train form.
    if not architecture.startswith("slowfast"):
        forms[ReparamLevel.PAPER] = reparameterize_model(model, ReparamLevel.PAPER)
        forms[ReparamLevel.FULL] = reparameterize_model(model, ReparamLevel.FULL)
    row: dict[str, Any] = {"architecture": architecture}
    for level in ReparamLevel:
        form = forms.get(level)
        row[f"params_{level.value}"] = None if form is None else count_params(form)
        macs = None if form is None else count_macs(form, frames=frames, mel_bins=_MEL_BINS)
        row[f"gmacs_{level.value}"] = None if macs is None else round(macs / 1e9, 4)
    return row


def _table(rows: list[dict[str, Any]], classes: int, frames: int) -> str:
    def millions(value: int | None) -> str:
        return "-" if value is None else f"{value / 1e6:.2f}M"

    def gmacs(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"{classes} classes, input {frames}x{_MEL_BINS}; GMACs = multiply-adds of one view (1e9)",
        "",
        "| architecture | params train | params paper | params full "
        "| GMACs train | GMACs paper | GMACs full |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [millions(row[f"params_{level.value}"]) for level in ReparamLevel]
        cells += [gmacs(row[f"gmacs_{level.value}"]) for level in ReparamLevel]
        lines.append(f"| {row['architecture']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_info(args: argparse.Namespace) -> int:
    """Print the complexity table (or JSON) of one or all architectures."""
    from arinext.model.registry import ARCHITECTURES

    if args.architecture == "all":
        architectures = list(ARCHITECTURES)
    elif args.architecture in ARCHITECTURES:
        architectures = [args.architecture]
    else:
        sys.stderr.write(
            f"error: unknown architecture {args.architecture!r}; "
            f"choose from {', '.join(ARCHITECTURES)} or all\n"
        )
        return _EXIT_ERROR
    if args.classes < 1 or args.frames < 1:
        sys.stderr.write("error: --classes and --frames must be positive\n")
        return _EXIT_ERROR
    rows = [_complexity_row(a, args.classes, args.frames) for a in architectures]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        sys.stdout.write(_table(rows, args.classes, args.frames))
    return 0


def run_import_checkpoint(args: argparse.Namespace) -> int:
    """Import one checkpoint; exit code 2 and ``error: ...`` on stderr when it is refused."""
    from arinext.model.checkpoint import CheckpointError, import_checkpoint
    from arinext.model.export import ExportError

    try:
        manifest = import_checkpoint(
            args.checkpoint,
            args.out,
            labels=args.labels,
            name=args.name,
            level=args.level,
            overwrite=args.overwrite,
        )
    except (CheckpointError, ExportError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return _EXIT_ERROR
    heads = ", ".join(f"{h.name} ({len(h.labels)} classes)" for h in manifest.heads)
    sys.stdout.write(
        f"wrote {args.out}: {manifest.name}, {manifest.architecture}, re-parameterised "
        f"{manifest.reparameterized}, heads {heads}, {manifest.num_params / 1e6:.2f}M params, "
        f"{manifest.gflops:.3f} GMACs\n"
    )
    return 0
