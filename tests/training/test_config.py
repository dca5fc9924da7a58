"""Presets, YAML and --set overrides resolve to one validated config."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import yaml

from arinext.training import recipes
from arinext.training.cli import register, resolve_train_config
from arinext.training.config import ConfigError, TrainConfig, load_yaml, save_config
from arinext.training.recipes import CONFIGS, load_recipe, preset_names, preset_values
from tests.training.conftest import run_cli

# The paper's recipes (the other preset is the default model's).
PAPER = [name for name in preset_names() if name != "default-model"]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


@pytest.mark.parametrize("name", PAPER)
def test_every_paper_preset_has_the_authors_values(name: str) -> None:
    cfg = TrainConfig.from_dict(preset_values(name))
    assert cfg.architecture == "b1" and cfg.momentum == 0.9 and cfg.nesterov
    assert cfg.weight_decay == 1e-4 and cfg.batch_size == 32
    if name == "pretrain-vggsound":
        assert (cfg.lr, cfg.lr_milestones, cfg.epochs) == (0.01, [30, 40], 50)
        assert cfg.precise_bn_batches == 200 and cfg.from_scratch and not cfg.frozen_bn
    else:
        assert (cfg.lr, cfg.lr_milestones, cfg.epochs) == (0.001, [20, 25], 30)
        assert cfg.freeze_bn and cfg.init == ""


def test_precedence_preset_yaml_flags_set(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"epochs": 7, "lr": 0.5, "audio": {"hop_ms": 4}}))
    args = _args(
        "--preset", "finetune-urbansound8k", "--config", str(config), "--lr", "0.2",
        "--fold", "4", "--set", "audio.num_frames=128", "model.depths=[1,1,1,1]", "init=none",
    )  # fmt: skip
    cfg = resolve_train_config(args)
    assert cfg.epochs == 7 and cfg.lr == 0.2 and cfg.data == {"fold": 4}
    assert cfg.model == {"depths": [1, 1, 1, 1]}
    audio = cfg.audio_config()
    assert (audio.name, audio.hop_ms, audio.num_frames, audio.sample_rate) == (
        "urbansound8k", 4, 128, 16000,
    )  # fmt: skip
    assert cfg.from_scratch and not cfg.frozen_bn  # BN freezing needs pre-trained weights

    save_config(cfg, tmp_path / "saved.yaml")
    again = TrainConfig.from_dict(load_yaml(tmp_path / "saved.yaml"))
    assert again.to_dict() == cfg.to_dict()


def test_bad_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown config key"):
        resolve_train_config(_args("--preset", "finetune-nsynth", "--set", "learning_rate=1"))
    with pytest.raises(ConfigError, match="integer"):
        resolve_train_config(_args("--preset", "finetune-nsynth", "--set", "epochs=1.5"))
    with pytest.raises(ConfigError, match="audio"):
        resolve_train_config(_args("--preset", "finetune-nsynth", "--set", "audio.hop_ms=-1"))
    with pytest.raises(ConfigError, match="--preset"):
        resolve_train_config(_args())


def test_finetune_presets_insist_on_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(
        "train", "--preset", "finetune-nsynth", "--data-root", tmp_path, "--out", tmp_path / "r"
    )
    assert code == 2
    assert "--init" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_config_is_a_strict_pydantic_model() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) augment\.mask"):
        TrainConfig.from_dict({"augment": {"mask": 3}})
    with pytest.raises(ConfigError, match="unknown audio preset"):
        TrainConfig.from_dict({"audio": {"name": "nope"}})
    with pytest.raises(ConfigError, match="amp"):
        TrainConfig.from_dict({"amp": "fp8"})
    cfg = TrainConfig.from_dict({"init": None, "augment": {"time_warp": 0}})
    assert cfg.init == "" and cfg.augment.time_warp == 0 and cfg.augment.freq_masks == 2


def test_runs_saved_with_retired_options_off_still_load() -> None:
    """Batch mixup and log-mel smoothing were removed; configs saved before that carry them
    switched off."""
    saved = {**TrainConfig().to_dict(), "mixup_alpha": 0.0, "mixup_prob": 1.0}
    saved["audio"] = {**saved["audio"], "smooth_frames": 1}
    assert TrainConfig.from_dict(saved).to_dict() == TrainConfig().to_dict()
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) mixup_alpha, mixup_prob"):
        TrainConfig.from_dict({"mixup_alpha": 0.4, "mixup_prob": 0.5})


def test_recipes_resolve_to_the_values_they_had_as_python_dicts() -> None:
    """tests/fixtures/recipes.json holds what every recipe resolved to before recipes were YAML
    (the default model was then finetune-speech-commands with its YAML over it, and labelled so;
    it now has a name of its own). A recipe change must change that file on purpose."""
    expected = json.loads(
        (Path(__file__).parents[1] / "fixtures" / "recipes.json").read_text(encoding="utf-8")
    )
    assert sorted(expected) == preset_names()
    for name in preset_names():
        resolved = resolve_train_config(_args("--preset", name))
        assert resolved.model_dump(mode="json") == expected[name], name


def test_presets_are_the_configs_that_are_not_bases(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {path.stem for path in CONFIGS.glob("*.yaml")}
    assert set(preset_names()) == {name for name in files if not name.startswith("_")}
    assert {"_pretrain", "_finetune", "default-model", *PAPER} == files
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside a name
    subparsers = argparse.ArgumentParser().add_subparsers()
    register(subparsers)
    help_text = subparsers.choices["train"].format_help()
    assert all(name in help_text for name in preset_names())


def test_a_users_file_builds_on_a_recipe(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("base: finetune-nsynth\ninit: none\nepochs: 3\naudio:\n  hop_ms: 8\n")
    cfg = resolve_train_config(_args("--config", str(config)))
    expected = preset_values("finetune-nsynth")
    assert (cfg.dataset, cfg.lr, cfg.lr_milestones) == ("nsynth", 0.001, [20, 25])
    assert (cfg.epochs, cfg.init, cfg.preset) == (3, "none", "custom")
    assert cfg.audio == {**expected["audio"], "hop_ms": 8}


def test_bases_resolve_in_the_configs_folder_without_cycles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recipes, "CONFIGS", tmp_path)
    (tmp_path / "_a.yaml").write_text("base: _b\nepochs: 5\n")
    (tmp_path / "_b.yaml").write_text("base: _a\nlr: 0.5\n")
    (tmp_path / "loop.yaml").write_text("base: _a\n")
    (tmp_path / "_bad.yaml").write_text("epochs: many\n")
    (tmp_path / "uses-bad.yaml").write_text("base: _bad\n")
    assert preset_names() == ["loop", "uses-bad"]
    with pytest.raises(ConfigError, match=r"cycle \(loop.yaml -> _a.yaml -> _b.yaml -> _a.yaml\)"):
        preset_values("loop")
    with pytest.raises(ConfigError, match=r"_bad\.yaml: epochs: .*integer.*many"):
        preset_values("uses-bad")
    mine = tmp_path / "elsewhere" / "mine.yaml"
    mine.parent.mkdir()
    (mine.parent / "sibling.yaml").write_text("epochs: 2\n")
    refused = rf"mine\.yaml: base .* is not a recipe of {re.escape(str(tmp_path))}"
    for base in ("sibling", "../loop", "_a.yaml", 3):
        mine.write_text(yaml.safe_dump({"base": base}))
        with pytest.raises(ConfigError, match=refused):
            load_recipe(mine)


def test_errors_name_the_file_that_holds_them(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("base: _finetune\nlearning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: unknown config key\(s\) learning_rate"):
        resolve_train_config(_args("--preset", "finetune-nsynth", "--config", str(config)))
    config.write_text("audio:\n  name: nope\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: unknown audio preset"):
        load_recipe(config)
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset_values("nope")
    config.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: while parsing"):
        load_recipe(config)
    with pytest.raises(ConfigError, match=r"missing\.yaml: .*No such file"):
        resolve_train_config(_args("--config", str(tmp_path / "missing.yaml")))
