"""Fine-tuning: every BN but the stem's is frozen (statistics, affine, optimiser); new heads."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from arinext.model.registry import create_model
from arinext.training.checkpoints import initial_model, load_checkpoint
from arinext.training.config import TrainConfig
from arinext.training.engine import build_optimizer, freeze_batchnorm, set_train_mode
from tests.fixtures import REFERENCE_CHECKPOINT
from tests.training.conftest import TINY_MODEL, TrainedRun, run_cli, tiny_overrides

AUTHORS_CHECKPOINT = REFERENCE_CHECKPOINT


def _norms(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def test_frozen_batchnorm_during_a_training_step() -> None:
    torch.manual_seed(0)
    model = create_model("b1", {"task": 5}, **TINY_MODEL)
    frozen = freeze_batchnorm(model)
    norms = _norms(model)
    stem = {n for n in norms if n.startswith("stem.")}
    assert stem and {n for n, m in norms.items() if m in frozen} == set(norms) - stem

    optimizer = build_optimizer(model, TrainConfig())
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, norm in norms.items():
        for param in norm.parameters():
            assert param.requires_grad == (name in stem)
            assert (id(param) in in_optimizer) == (name in stem)
    assert all(id(p) in in_optimizer for p in model.heads.parameters())

    before = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in norms.items()}
    set_train_mode(model, frozen)
    loss = model(torch.randn(4, 1, 50, 128) * 3 - 5)["task"].logsumexp(1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for name, norm in norms.items():
        unchanged = all(torch.equal(v, before[name][k]) for k, v in norm.state_dict().items())
        assert norm.training == (name in stem)  # eval mode while the model trains
        assert unchanged == (name not in stem), name


def test_finetune_from_a_run_keeps_frozen_statistics(
    trained_run: TrainedRun, speech_commands_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "finetuned"
    code = run_cli(
        "train", "--preset", "finetune-speech-commands", "--data-root", speech_commands_root,
        "--out", run, "--init", trained_run.path, "--epochs", 1, "--batch-size", 8,
        "--set", *[o for o in tiny_overrides() if not o.startswith("init=")],
    )  # fmt: skip
    assert code == 0
    source = load_checkpoint(trained_run.path / "best.pt")["model"]
    tuned = load_checkpoint(run / "last.pt")["model"]
    norms = _norms(create_model("b1", {"speech_commands": 35}, **TINY_MODEL))
    frozen = [k for k in source if k.rpartition(".")[0] in norms and not k.startswith("stem.")]
    assert len(frozen) >= 5 * 4  # weight, bias, running mean/var, count of every frozen BN
    assert all(torch.equal(tuned[k], source[k]) for k in frozen)
    # The stem's BN and the rest of the network did train.
    assert not torch.equal(tuned["stem.bn.running_mean"], source["stem.bn.running_mean"])
    assert not torch.equal(tuned["stem.conv.weight"], source["stem.conv.weight"])


def test_init_from_the_authors_checkpoint_gets_new_heads() -> None:
    cfg = TrainConfig(init=str(AUTHORS_CHECKPOINT), freeze_bn=True, architecture="b1")
    model, updates, source = initial_model(cfg, {"speech_commands": 35})
    assert updates == {"architecture": "b0", "model": {}}  # the checkpoint's network wins
    assert source == str(AUTHORS_CHECKPOINT)
    assert model.head_names == ["speech_commands"]
    assert model.heads["speech_commands"].out_features == 35
    authors = torch.load(AUTHORS_CHECKPOINT, weights_only=True)["model_state"]
    stem_weight = next(v for k, v in authors.items() if v.dim() == 4 and v.shape[1] == 1)
    assert torch.equal(model.stem.conv.weight, stem_weight)
