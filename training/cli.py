"""``arinext train | evaluate | export``: the training package's sub-commands.

Registering them imports no torch (the serving image has none); each command imports the engine
when it runs. Under ``torchrun`` the same commands run in every process.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arinext.training.config import (
    ConfigError,
    TrainConfig,
    UserError,
    deep_merge,
    load_yaml,
    parse_assignments,
)
from arinext.training.recipes import load_recipe, preset_names, preset_values

__all__ = ["register", "resolve_train_config"]

logger = logging.getLogger(__name__)

# Common flags -> config keys (each is also reachable as --set key=value).
_FLAG_KEYS = {
    "data_root": "data_root",
    "out": "out",
    "init": "init",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "architecture": "architecture",
    "num_workers": "num_workers",
    "seed": "seed",
    "device": "device",
}
_SPLIT_ROLES = ("test", "validation", "train")
_EXIT_ERROR = 2  # as argparse: the input (config, data, checkpoint) is at fault


def _reporting_user_errors(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Report a bad config, dataset layout, checkpoint or artifact in one line, not a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from arinext.model.manifest import ArtifactError

        try:
            return command(args)
        except (UserError, ArtifactError) as exc:
            sys.stderr.write(f"error: {exc}\n")
            return _EXIT_ERROR

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate`` and ``export`` to the ``arinext`` parser."""
    _register_train(subparsers)
    _register_evaluate(subparsers)
    _register_export(subparsers)


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="assignments",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help="override any config value; dotted keys reach sections "
        "(audio.hop_ms=8 model.width=16 data.fold=3 augment.enabled=false); values are YAML",
    )


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a model with a recipe (the paper's or the default model's)",
        description="Train a model; the resolved config is saved as RUN_DIR/config.yaml. "
        "Under torchrun (python -m torch.distributed.run ... -m arinext train ...) the run "
        "uses DistributedDataParallel across all processes.",
    )
    presets = preset_names()
    parser.add_argument(
        "--preset",
        choices=presets,
        metavar="NAME",
        help=f"the recipe to use (training/configs/NAME.yaml): {', '.join(presets)}",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML file of config values over the preset ('base: NAME' builds on a recipe)",
    )
    parser.add_argument("--data-root", help="the dataset's root folder (official layout)")
    parser.add_argument("--out", help="run directory to create (or to continue with --resume)")
    parser.add_argument(
        "--init",
        help="pre-trained weights to fine-tune: a run directory, a .pt checkpoint or the "
        "authors' .pyth; 'none' trains from scratch",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size (all processes)")
    parser.add_argument("--lr", type=float, help="base learning rate")
    parser.add_argument("--architecture", help="b0, b1, b1_2d or slowfast_r50")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers per process")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (default), cpu or cuda")
    parser.add_argument("--fold", type=int, help="UrbanSound8K validation fold (1-10)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last.pt"
    )
    _add_set(parser)
    parser.set_defaults(func=_reporting_user_errors(_cmd_train))


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    from arinext.model.backends import BACKENDS, PRECISION_HINTS

    parser = subparsers.add_parser(
        "evaluate",
        help="measure a run's or an exported artifact's metrics on a dataset split",
        description="Multi-view evaluation (softmax averaged over the preset's test views). "
        "TARGET is a run directory (its best checkpoint, in PyTorch) or an artifact directory "
        "(model.onnx through ONNX Runtime, or --backend, as served). Prints the metrics and "
        "saves them as JSON (default TARGET/eval_<split>.json).",
    )
    parser.add_argument("target", type=Path, help="run directory or artifact directory")
    parser.add_argument("--data-root", help="dataset root (default: the run's)")
    parser.add_argument(
        "--split",
        choices=_SPLIT_ROLES,
        default="test",
        help="which split of the recipe: test (EPIC and UrbanSound8K: the validation split, "
        "whose labels are public), validation or train",
    )
    parser.add_argument(
        "--dataset", help="dataset reader for an artifact whose manifest does not name one"
    )
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--batch-size", type=int, help="clips per evaluation batch")
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--device", help="auto (default), cpu or cuda (run directories)")
    parser.add_argument("--output", type=Path, help="where to save the metrics JSON")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="onnxruntime",
        help="artifacts: the runtime that scores them, as ARINEXT_BACKEND serves them",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISION_HINTS,
        default="auto",
        help="artifacts on OpenVINO: as ARINEXT_PRECISION (auto: bf16 where the CPU has it)",
    )
    parser.add_argument(
        "--ood",
        type=Path,
        metavar="ROOT",
        help="an out-of-domain set written by `arinext synth-speech-commands --ood`: evaluate "
        "every condition under ROOT and report keyword top-1 and false alarms per voice and "
        "condition (saved as TARGET/eval_ood.json unless --output)",
    )
    parser.add_argument(
        "--recordings",
        type=Path,
        metavar="DIR",
        help="recorded speech in the Speech Commands layout: evaluate its held-out (test) "
        "speakers clean and through a telephone channel, with room noise and the data root's "
        "_unknown_ test speech as non-keywords; report all words, the ten core words, per word, "
        "confusions and false accepts (saved as TARGET/eval_recordings.json unless --output)",
    )
    _add_set(parser)
    parser.set_defaults(func=_reporting_user_errors(_cmd_evaluate))


def _register_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a run's best checkpoint as a servable artifact (ONNX + manifest)",
        description="Re-parameterise the best checkpoint, export and verify it with ONNX "
        "Runtime, and write model.onnx + manifest.json (labels, front-end settings, the "
        "checkpoint's validation metrics and, when `arinext evaluate` has measured it, its test "
        "metrics).",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    parser.add_argument(
        "--level",
        choices=("full", "paper", "none"),
        default="full",
        help="re-parameterisation: full folds every BN, paper merges the mixers only",
    )
    parser.add_argument("--name", help="artifact name (default: <dataset>-<architecture>)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing artifact")
    parser.set_defaults(func=_reporting_user_errors(_cmd_export))


# --- train --------------------------------------------------------------------------------


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attr, key in _FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            values[key] = value
    if getattr(args, "fold", None) is not None:
        values["data"] = {"fold": args.fold}
    return values


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    """Preset < YAML < flags < --set; ``--resume`` starts from the run's saved config instead."""
    from arinext.training.checkpoints import CONFIG

    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR")
        saved = Path(args.out) / CONFIG
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} does not exist")
        values = load_yaml(saved)
        if args.preset:
            logger.warning("--resume: ignoring --preset, the run's saved config is used")
    else:
        # A file may name its preset itself (``preset: NAME``), as a run's saved config does.
        preset = args.preset or (load_yaml(args.config).get("preset") if args.config else None)
        if not preset and not args.config:
            raise ConfigError("choose a recipe with --preset NAME (or --config FILE)")
        values = preset_values(preset) if preset else {}
    if args.config:
        values = load_recipe(args.config, under=values)
    if args.preset and not args.resume:
        values["preset"] = args.preset
    values = deep_merge(values, _flag_overrides(args))
    values = deep_merge(values, parse_assignments(args.assignments))
    return TrainConfig.from_dict(values)


def _cmd_train(args: argparse.Namespace) -> int:
    from arinext.training.engine import train

    cfg = resolve_train_config(args)
    run_dir = train(cfg, resume=args.resume)
    logger.info("run directory: %s", run_dir)
    return 0


# --- evaluate -----------------------------------------------------------------------------


def _artifact_config(target: Path, args: argparse.Namespace) -> TrainConfig:
    """A config describing how to read the data an artifact is evaluated on."""
    from arinext.model.manifest import read_manifest

    manifest = read_manifest(target)
    recipe = manifest.extra.get("training", {})
    dataset = args.dataset or manifest.extra.get("dataset")
    if not dataset:
        raise ConfigError(f"{target}: the manifest names no dataset; pass --dataset NAME")
    values: dict[str, Any] = {
        "dataset": dataset,
        "audio": manifest.frontend.model_dump(mode="json"),
        "data": dict(manifest.extra.get("data", {})),
    }
    for key in ("train_split", "val_split", "test_split"):
        if key in recipe:
            values[key] = recipe[key]
    return TrainConfig.from_dict(values)


def _eval_overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attr, key in (
        ("data_root", "data_root"),
        ("batch_size", "eval_batch_size"),
        ("num_workers", "num_workers"),
        ("device", "device"),
    ):
        if getattr(args, attr) is not None:
            values[key] = getattr(args, attr)
    return deep_merge(values, parse_assignments(args.assignments))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from arinext.model.manifest import MANIFEST_FILE
    from arinext.training.checkpoints import CONFIG, load_run
    from arinext.training.config import apply_overrides
    from arinext.training.datasets import ClipDataset, read_split
    from arinext.training.distributed import cleanup, setup
    from arinext.training.evaluation import onnx_scorer, predict, torch_scorer
    from arinext.training.metrics import evaluation_metrics

    target: Path = args.target
    is_run = (target / CONFIG).is_file()
    if not is_run and not (target / MANIFEST_FILE).is_file():
        raise ConfigError(f"{target} is neither a run directory nor an artifact directory")
    if is_run:
        model, cfg, payload = load_run(target, args.checkpoint)
        source: dict[str, Any] = {"checkpoint": args.checkpoint, "epoch": payload["epoch"]}
    else:
        cfg = _artifact_config(target, args)
        source = {"artifact": str(target), "backend": args.backend}
        if args.backend == "openvino":
            source["precision"] = args.precision
    cfg = apply_overrides(cfg, _eval_overrides(args))
    if args.ood and args.recordings:
        raise ConfigError("--ood and --recordings are separate evaluations: give one")
    if args.recordings:
        cfg = apply_overrides(cfg, _recordings_overrides(cfg, args.recordings))
    if not cfg.data_root and not args.ood:
        raise ConfigError("--data-root is required")
    split = {"test": cfg.test_split, "validation": cfg.val_split, "train": cfg.train_split}[
        args.split
    ]
    roots = _ood_roots(args.ood) if args.ood else {"": Path(cfg.data_root)}
    if args.recordings:
        roots = {condition: Path(cfg.data_root) for condition in RECORDED_CONDITIONS}
    ctx = setup(cfg.device)
    results: dict[str, dict[str, Any]] = {}
    try:
        scorer = None
        for condition, root in roots.items():
            index = read_split(cfg.dataset, str(root), split, cfg.data)
            if args.recordings:
                index = _recorded_and_unknown(index, args.recordings)
            dataset = ClipDataset(
                index,
                cfg.audio_config(),
                "eval",
                seed=cfg.seed,
                condition=condition if args.recordings else "clean",
            )
            if scorer is None:  # one model or session for every condition (same classes)
                if is_run:
                    model.to(ctx.device)
                    scorer = torch_scorer(model, ctx.device)
                else:
                    scorer, _ = onnx_scorer(
                        target,
                        index.heads,
                        threads=torch.get_num_threads(),
                        backend=args.backend,
                        precision=args.precision,
                    )
            probs, labels = predict(
                scorer,
                dataset,
                ctx,
                batch_size=cfg.eval_batch_size,
                num_workers=cfg.num_workers,
            )
            result: dict[str, Any] = dict(evaluation_metrics(probs, labels, index.subsets))
            keywords = _keyword_summary(index, probs, labels, root)
            if keywords is not None:
                result["keywords"] = keywords
            results[condition] = result
    finally:
        cleanup()
    if ctx.is_main:
        report = {"target": str(target), **source, "dataset": cfg.dataset, "split": split}
        if args.ood:
            report["ood"] = str(args.ood)
            report["conditions"] = results
            report["summary"] = _ood_summary(results)
        elif args.recordings:
            report["recordings"] = str(args.recordings)
            report["conditions"] = results
            report["summary"] = _recorded_summary(results)
        else:
            report["metrics"] = results[""]
        name = (
            "eval_ood.json"
            if args.ood
            else "eval_recordings.json"
            if args.recordings
            else f"eval_{args.split}.json"
        )
        output = args.output or target / name
        output.write_text(json.dumps(report, indent=2) + "\n")
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        logger.info("metrics saved to %s", output)
    return 0


# The conditions recorded speech is measured in: as recorded, and through a telephone line.
RECORDED_CONDITIONS = ("clean", "telephone")


def _recordings_overrides(cfg: TrainConfig, folder: Path) -> dict[str, Any]:
    """Config overrides adding ``folder``'s recordings (the data root's clips stay in; without a
    data root, the recordings alone)."""
    from arinext.training.datasets.recordings import require_recordings

    data = {"recordings": str(require_recordings(folder)), "extra_classes": True}
    if cfg.data_root:
        return {"data": data}
    return {"data": {**data, "recordings_only": True}, "data_root": str(folder)}


def _recorded_and_unknown(index: Any, folder: Path) -> Any:
    """The recorded clips of ``index`` and its ``_unknown_`` speech (non-keywords to refuse)."""
    from dataclasses import replace

    from arinext.model.labels import UNKNOWN

    names = next(iter(index.heads.values()))
    unknown = names.index(UNKNOWN)
    inside = folder.resolve()
    clips = [
        c
        for c in index.clips
        if Path(c.path).resolve().is_relative_to(inside) or c.labels[0] == unknown
    ]
    return replace(index, clips=clips, subsets={})


def _recorded_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per condition: all words, the ten core words, and false accepts by kind."""
    from arinext.model.labels import CORE_WORDS, SILENCE, UNKNOWN

    out = {}
    for condition, result in results.items():
        keywords = result["keywords"]
        per = keywords["per_keyword"]
        core = [w for w in CORE_WORDS if w in per]
        said = sum(per[w]["clips"] for w in core)
        by_class = keywords["false_alarm_by_class"]
        out[condition] = {
            "keyword_top1": keywords["keyword_top1"],
            "core_top1": sum(per[w]["top1"] * per[w]["clips"] for w in core) / said
            if said
            else None,
            "false_accepts_room_noise": by_class.get(SILENCE),
            "false_accepts_speech": by_class.get(UNKNOWN),
            "keyword_clips": keywords["keyword_clips"],
        }
    return out


def _ood_roots(root: Path) -> dict[str, Path]:
    """Condition name -> dataset root of an out-of-domain set."""
    recipe = root / "recipe.json"
    if not recipe.is_file():
        raise ConfigError(f"{root}: no recipe.json (write it with synth-speech-commands --ood)")
    conditions = json.loads(recipe.read_text())["conditions"]
    return {c: root / c for c in conditions}


def _keyword_summary(index: Any, probs: Any, labels: Any, root: Path) -> dict[str, Any] | None:
    """Keyword top-1 / false alarms / confusions when the head has keyword classes."""
    from arinext.model.labels import NOT_KEYWORDS
    from arinext.training.keyword_report import keyword_report, voice_of

    head, names = next(iter(index.heads.items()))
    if not NOT_KEYWORDS & set(names):
        return None
    hashes: dict[str, str] = {}
    for recipe in (root / "recipe.json", root.parent / "recipe.json"):
        if recipe.is_file():
            hashes = json.loads(recipe.read_text()).get("voice_hashes", {})
            break
    by_hash = {h: v for v, h in hashes.items()}
    voices = [voice_of(clip.path, by_hash) for clip in index.clips]
    return keyword_report(probs[head], labels[head], names, voices)


def _ood_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One line per condition: keyword top-1 and false-alarm rate."""
    out = {}
    for condition, result in results.items():
        keywords = result.get("keywords", {})
        out[condition] = {
            "keyword_top1": keywords.get("keyword_top1", result.get("top1")),
            "false_alarm_rate": keywords.get("false_alarm_rate"),
            "clips": result.get("num_clips"),
        }
    return out


# --- export -------------------------------------------------------------------------------


def _test_metrics(run_dir: Path, epoch: int, checkpoint: str) -> dict[str, Any] | None:
    """Test metrics `arinext evaluate` measured on this very checkpoint, if any."""
    path = run_dir / "eval_test.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    if report.get("checkpoint") != checkpoint or report.get("epoch") != epoch:
        logger.warning("%s was measured on another checkpoint; not put in the manifest", path)
        return None
    return {"split": report["split"], **report["metrics"]}


def _cmd_export(args: argparse.Namespace) -> int:
    from arinext.model.export import ExportError, default_provenance, export_artifact
    from arinext.training.checkpoints import load_run

    run_dir: Path = args.run_dir
    model, cfg, payload = load_run(run_dir, args.checkpoint)
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cfg.dataset}-{cfg.architecture}")
    metrics: dict[str, Any] = {
        "epoch": payload["epoch"],
        "validation": {"split": cfg.val_split, **payload["metrics"]},
    }
    test = _test_metrics(run_dir, payload["epoch"], args.checkpoint)
    if test is not None:
        metrics["test"] = test
    extra = {
        "dataset": cfg.dataset,
        "data": cfg.data,
        "training": {
            "preset": cfg.preset,
            "init": cfg.init,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "model": cfg.model,
            "train_split": cfg.train_split,
            "val_split": cfg.val_split,
            "test_split": cfg.test_split,
        },
    }
    try:
        manifest = export_artifact(
            model,
            args.out,
            name=name,
            architecture=cfg.architecture,
            frontend=cfg.audio_config(),
            labels=payload["labels"],
            level=args.level,
            provenance=default_provenance(source=str(run_dir)),
            metrics=metrics,
            extra=extra,
            overwrite=args.overwrite,
        )
    except ExportError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return _EXIT_ERROR
    sys.stdout.write(
        f"wrote {args.out}: {manifest.name} ({manifest.architecture}, {manifest.reparameterized}, "
        f"{manifest.num_params} parameters, {manifest.gflops:.3f} GFLOPs)\n"
    )
    return 0
