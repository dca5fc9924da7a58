"""Training recipes: YAML files of ``TrainConfig`` values, one format for every recipe.

The paper's recipes and the default model's are files in ``configs/`` beside this module (shipped
in the wheel); ``--preset NAME`` reads ``configs/NAME.yaml``, and the presets are the files whose
names do not start with ``_`` (those are shared bases). A file may build on another with
``base: NAME`` (a file of ``configs/``): the base resolves first, its bases before it, and the
file's values merge over it. Every file is validated with what lies under it, so an unknown key
or a bad value is reported with the name of the file that holds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arinext.training.config import ConfigError, TrainConfig, deep_merge, load_yaml

__all__ = ["CONFIGS", "load_recipe", "preset_names", "preset_values"]

CONFIGS = Path(__file__).resolve().parent / "configs"
_BASE = "base"


def preset_names() -> list[str]:
    """The recipes ``--preset`` accepts: the YAML files of ``configs/`` that are not bases."""
    return sorted(p.stem for p in CONFIGS.glob("*.yaml") if not p.name.startswith("_"))


def preset_values(name: str) -> dict[str, Any]:
    """The preset's values, labelled with its name (to merge YAML and CLI overrides into)."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    return deep_merge({"preset": name}, load_recipe(CONFIGS / f"{name}.yaml"))


def load_recipe(path: Path | str, under: dict[str, Any] | None = None) -> dict[str, Any]:
    """The file's values over its bases, all over ``under`` (values of lower precedence)."""
    return _resolve(Path(path), dict(under or {}), ())


def _resolve(path: Path, under: dict[str, Any], chain: tuple[Path, ...]) -> dict[str, Any]:
    """``chain``: the files that asked for this one, to refuse a cycle instead of recursing."""
    if path.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, path.resolve()))
        raise ConfigError(f"{path}: recipes build on each other in a cycle ({cycle})")
    values = load_yaml(path)
    base = values.pop(_BASE, None)
    if base is not None:
        under = _resolve(_base_path(path, base), under, (*chain, path.resolve()))
    merged = deep_merge(under, values)
    try:
        TrainConfig.from_dict(merged)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return merged


def _base_path(path: Path, base: Any) -> Path:
    """The file ``base: NAME`` names: a recipe of ``configs/``, never a path elsewhere."""
    known = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    if base not in known:
        raise ConfigError(
            f"{path}: base {base!r} is not a recipe of {CONFIGS}; known: {', '.join(known)}"
        )
    return CONFIGS / f"{base}.yaml"
