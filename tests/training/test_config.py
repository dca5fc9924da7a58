"""Presets, YAML and --set overrides resolve to one validated config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from arinext.training.cli import register, resolve_train_config
from arinext.training.config import ConfigError, TrainConfig, load_yaml, save_config
from arinext.training.presets import PRESETS, preset_config
from tests.training.conftest import run_cli


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid(name: str) -> None:
    cfg = TrainConfig.from_dict(preset_config(name))
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
