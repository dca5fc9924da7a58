"""Re-parameterisation is exact: RepVGG's verify trick with non-trivial BN statistics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from arinext.model import inception_next
from arinext.model.inception_next import InvertedBottleneck, MultiScaleMixer
from arinext.model.layers import ConvBN, conv_bn
from arinext.model.registry import create_model
from arinext.model.reparam import ReparamLevel, fuse_conv_bn, pad_kernel_to, reparameterize_model

TOLERANCE = 1e-4


def _randomise_batchnorm(model: nn.Module, frames: int = 512, seed: int = 0) -> nn.Module:
    """RepVGG's verify trick on EVERY BatchNorm: random affine parameters, statistics calibrated
    on noise and then perturbed.

    With default statistics (mean 0, var 1, gamma 1, beta 0) a BN is nearly the identity and
    fusion bugs hide; calibrating first keeps activations O(1) so 1e-4 is a meaningful bound
    (the perturbation stays small because its effect compounds over 16 blocks).
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            n = bn.num_features
            bn.weight.copy_(torch.rand(n, generator=gen) * 0.8 + 0.4)
            bn.bias.copy_(torch.randn(n, generator=gen) * 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        for bottleneck in (m for m in model.modules() if isinstance(m, InvertedBottleneck)):
            # Small residual branches, as in trained ResNets; large ones make the random
            # network chaotic, so that float32 rounding alone moves the logits by ~1e-4.
            bottleneck.fc2.bn.weight.mul_(0.25)
        model.train()
        calibration = torch.randn(2, 1, frames, 128, generator=gen)
        model(calibration)
        for bn in bns:
            n = bn.num_features
            std = bn.running_var.sqrt()
            bn.running_mean.add_(torch.randn(n, generator=gen) * 0.02 * std)
            bn.running_var.mul_(torch.rand(n, generator=gen) * 0.1 + 0.95)
            bn.momentum = 0.1
        model.eval()
        features = model.forward_features(calibration)
        for head in model.heads.values():  # logits O(1-10), like the reference fixture's
            head.weight.normal_(generator=gen)
            head.weight.mul_(3.0 / (features @ head.weight.T).std())
    return model


def _max_logit_diff(merged: nn.Module, cases: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    worst = 0.0
    for x, reference in cases:
        assert reference.abs().max() > 0.5  # the comparison is not between near-zero tensors
        with torch.no_grad():
            worst = max(worst, (merged(x)["default"] - reference).abs().max().item())
    return worst


# (frames, batch): the full cross product for every architecture, as the acceptance asks.
GRID = [(512, 3), (512, 1), (416, 3), (416, 1)]
CASES = {"b0": GRID, "b1": GRID, "b1_2d": GRID}


@pytest.fixture(scope="module")
def trained(request: pytest.FixtureRequest) -> dict:
    """A randomised model and its train-form logits for each of its ``CASES``."""
    architecture = request.param
    torch.manual_seed(0)
    model = _randomise_batchnorm(create_model(architecture, {"default": 309}))
    gen = torch.Generator().manual_seed(1)
    cases = []
    with torch.no_grad():
        for frames, batch in CASES[architecture]:
            x = torch.randn(batch, 1, frames, 128, generator=gen)
            cases.append((x, model(x)["default"]))
    return {"model": model, "cases": cases}


LEVELS = [ReparamLevel.PAPER, ReparamLevel.FULL]


@pytest.mark.parametrize("level", LEVELS, ids=str)
@pytest.mark.parametrize("trained", ["b0", "b1", "b1_2d"], indirect=True)
def test_reparameterized_logits_match(trained: dict, level: ReparamLevel) -> None:
    merged = reparameterize_model(trained["model"], level)
    diff = _max_logit_diff(merged, trained["cases"])
    assert diff <= TOLERANCE, f"{level}: {diff}"


@pytest.mark.parametrize("trained", ["b0"], indirect=True)
def test_every_batchnorm_is_randomised(trained: dict) -> None:
    """No BN is left near the identity, where a fusion bug would hide."""
    bns = [m for m in trained["model"].modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) > 100
    for bn in bns:
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.bias, torch.zeros_like(bn.bias))
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))


def _off_centre_11(kernel: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """A fusion bug: the 11-tap branch padded one tap too far to one side."""
    if kernel.shape[axis] != 11:
        return pad_kernel_to(kernel, size, axis)
    extra = size - kernel.shape[axis]
    pads = [0, 0] * (kernel.dim() - axis % kernel.dim() - 1) + [extra // 2 - 1, extra // 2 + 1]
    return nn.functional.pad(kernel, pads)


def _bn_mean_ignored(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fusion bug: the BN's running mean left out of the fused bias."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias.clone()


@pytest.mark.parametrize(
    ("target", "bug"),
    [
        ((inception_next, "pad_kernel_to"), _off_centre_11),
        ((conv_bn, "fuse_conv_bn"), _bn_mean_ignored),
    ],
    ids=["11-tap-off-centre", "bn-mean-ignored"],
)
@pytest.mark.parametrize("trained", ["b0"], indirect=True)
def test_a_broken_fusion_fails_the_check(
    trained: dict, target: tuple[object, str], bug: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The equivalence check above catches a deliberately broken fusion at both levels."""
    monkeypatch.setattr(*target, bug)
    for level in LEVELS:
        merged = reparameterize_model(trained["model"], level)
        assert _max_logit_diff(merged, trained["cases"]) > 100 * TOLERANCE, level


@pytest.fixture(scope="module")
def small_model() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_batchnorm(create_model("b0", {"default": 10}), frames=96)


def test_paper_then_full_equals_full(small_model: nn.Module) -> None:
    model = small_model
    x = torch.randn(2, 1, 96, 128)
    staged = reparameterize_model(reparameterize_model(model, ReparamLevel.PAPER))
    direct = reparameterize_model(model, ReparamLevel.FULL)
    with torch.no_grad():
        torch.testing.assert_close(staged(x), direct(x), rtol=0, atol=1e-5)
    assert staged.state_dict().keys() == direct.state_dict().keys()


@pytest.mark.parametrize("level", LEVELS, ids=str)
def test_second_reparameterize_is_noop(small_model: nn.Module, level: ReparamLevel) -> None:
    merged = reparameterize_model(small_model, level)
    before = {k: v.clone() for k, v in merged.state_dict().items()}
    fused = [m.fused for m in merged.modules() if isinstance(m, MultiScaleMixer)]
    again = reparameterize_model(merged, level, inplace=True)
    assert again is merged
    after = merged.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert fused == [m.fused for m in merged.modules() if isinstance(m, MultiScaleMixer)]


def test_copy_leaves_original_untouched(small_model: nn.Module) -> None:
    model = copy.deepcopy(small_model).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = reparameterize_model(model, ReparamLevel.FULL, inplace=False)
    assert merged is not model
    assert model.training and not merged.training
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    block = model.stages[0].blocks[0]
    assert hasattr(block.time_mixer, "k21") and not hasattr(block.time_mixer, "fused")


def test_paper_level_merges_only_mixers(small_model: nn.Module) -> None:
    merged = reparameterize_model(small_model, ReparamLevel.PAPER)
    mixers = [m for m in merged.modules() if isinstance(m, MultiScaleMixer)]
    assert mixers and all(
        isinstance(m.fused, nn.Conv2d) and m.fused.bias is not None and not m.identity_folded
        for m in mixers
    )
    assert not any(hasattr(m, "k3") or hasattr(m, "k11") or hasattr(m, "k21") for m in mixers)
    assert mixers[0].fused.weight.shape[-2:] == (21, 1)
    assert mixers[1].fused.weight.shape[-2:] == (1, 21)
    units = [m for m in merged.modules() if isinstance(m, ConvBN)]
    assert units and all(isinstance(u.bn, nn.BatchNorm2d) for u in units)


def test_full_fold_has_no_batchnorm(small_model: nn.Module) -> None:
    merged = reparameterize_model(small_model, ReparamLevel.FULL)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in merged.modules())
    assert all(m.bias is not None for m in merged.modules() if isinstance(m, nn.Conv2d))
    assert isinstance(merged.stem.fused, nn.Conv2d)


def _random_bn(channels: int, seed: int) -> nn.BatchNorm2d:
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
        bn.weight.copy_(torch.randn(channels, generator=gen))
        bn.bias.copy_(torch.randn(channels, generator=gen))
    return bn


@pytest.mark.parametrize("with_bias", [False, True])
def test_fuse_conv_bn_matches_modules(with_bias: bool) -> None:
    conv = nn.Conv2d(4, 6, (3, 5), padding=(1, 2), bias=with_bias)
    bn = _random_bn(6, seed=2)
    weight, bias = fuse_conv_bn(conv.weight, conv.bias, bn)
    x = torch.randn(2, 4, 9, 11)
    expected = bn(conv(x))
    got = nn.functional.conv2d(x, weight, bias, padding=(1, 2))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    (weight.sum() + bias.sum()).backward()  # differentiable: usable in training-time tricks
    assert conv.weight.grad is not None and bn.weight.grad is not None


def test_pad_kernel_to_pads_one_axis_centred() -> None:
    kernel = torch.arange(6.0).reshape(2, 1, 3, 1)
    padded = pad_kernel_to(kernel, 21, axis=2)
    assert padded.shape == (2, 1, 21, 1)
    torch.testing.assert_close(padded[:, :, 9:12], kernel)
    assert padded.abs().sum() == kernel.abs().sum()
    assert pad_kernel_to(kernel.transpose(2, 3), 11, axis=-1).shape == (2, 1, 1, 11)
    with pytest.raises(ValueError, match="cannot centre"):
        pad_kernel_to(kernel, 20, axis=2)


@pytest.mark.parametrize("axis", ["time", "freq", "both"])
def test_mixer_fusion_single_module(axis: str) -> None:
    torch.manual_seed(3)
    mixer = MultiScaleMixer(5, (21, 11, 3), axis)
    for i, k in enumerate((21, 11, 3)):
        getattr(mixer, f"k{k}").bn = _random_bn(5, seed=10 + i)
    mixer.eval()
    x = torch.randn(2, 5, 30, 26)
    with torch.no_grad():
        expected = mixer(x)
        mixer.merge_branches()
        assert not mixer.identity_folded
        torch.testing.assert_close(mixer(x), expected, rtol=1e-5, atol=1e-5)
        mixer.reparameterize()
        assert mixer.identity_folded
        torch.testing.assert_close(mixer(x), expected, rtol=1e-5, atol=1e-5)
    assert [name for name, _ in mixer.named_children()] == ["act", "fused"]


def test_each_module_reparameterizes_itself_completely() -> None:
    """MobileOne style: ``reparameterize()`` with no arguments does the module's whole job."""
    unit = ConvBN(3, 4, (3, 1), padding=(1, 0))
    unit.bn = _random_bn(4, seed=5)
    unit.eval()
    x = torch.randn(2, 3, 8, 5)
    with torch.no_grad():
        expected = unit(x)
        unit.reparameterize()
        torch.testing.assert_close(unit(x), expected, rtol=1e-5, atol=1e-5)
    assert [name for name, _ in unit.named_children()] == ["fused"]
    unit.reparameterize()  # a no-op once folded
    assert [name for name, _ in unit.named_children()] == ["fused"]


def test_driver_leaves_foreign_modules_alone() -> None:
    """Only ``reparameterize()``/``merge_branches()`` are called, never with our arguments."""

    class Foreign(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self.conv = nn.Conv2d(1, 1, 1)

        def reparameterize(self) -> None:
            self.calls += 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    model = nn.Sequential(Foreign(), nn.ReLU())
    assert reparameterize_model(model, ReparamLevel.PAPER)[0].calls == 0
    assert reparameterize_model(model, ReparamLevel.FULL)[0].calls == 1
    assert reparameterize_model(model, "none")[0].calls == 0
