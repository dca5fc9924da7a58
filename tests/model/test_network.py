"""Network contract, structure, registry, and the authors' checkpoint as golden values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from arinext.model.inception_next import AudioRepInceptionNeXt, MultiScaleMixer, authors_key_map
from arinext.model.layers import ConvBN
from arinext.model.registry import ARCHITECTURES, VARIANTS, create_model
from arinext.model.reparam import ReparamLevel, reparameterize_model
from arinext.model.slowfast import AuditorySlowFast
from tests.fixtures import LAYOUT_B1, REFERENCE_CHECKPOINT, REFERENCE_EXPECTED

CHECKPOINT = REFERENCE_CHECKPOINT
EXPECTED = REFERENCE_EXPECTED


# Authors' per-block key stems that a merged checkpoint still carries but a merged model lacks.
BRANCH_STEMS = {
    f"{axis}{part}{size}"
    for axis in "ab"
    for part in ("", "_bn")
    for size in ("", "_medium", "_small")
}


@pytest.fixture(scope="module")
def b0() -> AudioRepInceptionNeXt:
    torch.manual_seed(0)
    return create_model("b0", {"default": 309})


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_returns_logits_per_head(b0: AudioRepInceptionNeXt, mode: str) -> None:
    b0.train(mode == "train")
    out = b0(torch.randn(2, 1, 64, 128))
    assert list(out) == b0.head_names == ["default"]
    assert out["default"].shape == (2, 309)
    assert (out["default"] < 0).any()  # logits, not probabilities


@pytest.mark.parametrize("frames", [100, 333, 130])
@pytest.mark.parametrize("architecture", ["b0", "slowfast_r50"])
def test_two_heads_any_length(architecture: str, frames: int) -> None:
    torch.manual_seed(0)
    model = create_model(architecture, {"verb": 97, "noun": 300}).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, frames, 128))
    assert list(out) == model.head_names == ["verb", "noun"]
    assert out["verb"].shape == (1, 97) and out["noun"].shape == (1, 300)


@pytest.mark.parametrize("architecture", ["b0", "slowfast_r50"])
def test_reset_heads_replaces_with_fresh_linear(architecture: str) -> None:
    model = create_model(architecture, {"default": 309}).double()
    old = model.heads["default"]
    model.reset_heads({"speech": 35})
    assert model.head_names == ["speech"]
    head = model.heads["speech"]
    assert head is not old and head.out_features == 35 and head.weight.dtype == torch.float64
    assert 0.005 < head.weight.std().item() < 0.015 and not head.bias.any()
    out = model(torch.randn(1, 1, 64, 128, dtype=torch.float64))
    assert list(out) == ["speech"] and out["speech"].shape == (1, 35)


def test_stem_is_strided_conv_with_its_bn(b0: AudioRepInceptionNeXt) -> None:
    conv = b0.stem.conv
    assert (conv.kernel_size, conv.stride, conv.padding) == ((5, 7), (2, 2), (2, 3))
    assert conv.bias is None and isinstance(b0.stem.bn, nn.BatchNorm2d)
    assert b0.stem(torch.zeros(1, 1, 512, 128)).shape == (1, 32, 128, 32)
    slowfast = create_model("slowfast_r50", {"default": 309})
    assert sum(isinstance(m, nn.BatchNorm2d) for m in slowfast.stem.modules()) == 3


def test_block_structure_and_names(b0: AudioRepInceptionNeXt) -> None:
    modules = dict(b0.named_modules())
    first = b0.stages[0].blocks[0]
    assert isinstance(first.shortcut, nn.Identity)
    for axis, shape in (("time", (21, 1)), ("freq", (1, 21))):
        mixer = modules[f"stages.0.blocks.0.{axis}_mixer"]
        assert isinstance(mixer, MultiScaleMixer)
        for k in (21, 11, 3):
            conv = modules[f"stages.0.blocks.0.{axis}_mixer.k{k}"].conv
            assert conv.groups == conv.in_channels == 32 and conv.bias is None
        assert mixer.k21.conv.kernel_size == shape
    down = b0.stages[1].blocks[0]
    assert isinstance(down.shortcut, ConvBN) and down.shortcut.conv.stride == (2, 2)
    assert down.conv_in.conv.stride == (2, 2) and down.conv_in.conv.kernel_size == (1, 1)
    assert down.mlp.fc1.conv.out_channels == 4 * 64 and down.mlp.fc2.conv.out_channels == 64
    assert b0.heads["default"].in_features == 8 * 32


def test_2d_variant_has_one_square_mixer() -> None:
    model = create_model("b1_2d", {"default": 309}, depths=(1, 1, 1, 1))
    block = model.stages[0].blocks[0]
    assert not hasattr(block, "time_mixer") and not hasattr(block, "freq_mixer")
    assert [block.mixer.k21.conv.kernel_size, block.mixer.k3.conv.kernel_size] == [
        (21, 21),
        (3, 3),
    ]


def test_initialisation(b0: AudioRepInceptionNeXt) -> None:
    blocks = [b for stage in b0.stages for b in stage.blocks]
    assert all(not b.mlp.fc2.bn.weight.any() for b in blocks)  # residual branches start at 0
    assert all(b.mlp.fc1.bn.weight.eq(1).all() and not b.mlp.fc1.bn.bias.any() for b in blocks)
    fc1 = blocks[-1].mlp.fc1.conv  # MSRA fill, fan_out: std = sqrt(2 / out_channels)
    assert fc1.weight.std().item() == pytest.approx((2 / fc1.out_channels) ** 0.5, rel=0.05)
    head = b0.heads["default"]
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.05) and not head.bias.any()


def test_registry() -> None:
    assert ARCHITECTURES == ("b0", "b1", "b1_2d", "slowfast_r50")
    assert VARIANTS["b1"]["width"] == 64 and VARIANTS["b0"]["width"] == 32
    model = create_model("b0", {"a": 3}, width=16, depths=(1, 1, 1, 1), dropout=0.1)
    assert isinstance(model, AudioRepInceptionNeXt)
    assert model.stem.conv.out_channels == 16 and model.dropout.p == 0.1
    assert isinstance(create_model("slowfast_r50", {"a": 3}), AuditorySlowFast)
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("b7", {"a": 3})


def _layout_b1() -> dict[str, tuple[tuple[int, ...], bool]]:
    """Authors' key -> (shape, only in merged checkpoints) from the reference layout file."""
    layout = {}
    for line in LAYOUT_B1.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        merged = shape.endswith("[merged]")
        shape = shape.removesuffix(" [merged]")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        layout[key] = (dims, merged)
    return layout


def _block_stem(authors_key: str) -> str:
    parts = authors_key.split(".")  # s3.pathway0_res1.branch2.a_bn_small.weight -> a_bn_small
    return parts[3] if len(parts) == 5 and parts[2] == "branch2" else ""


@pytest.mark.parametrize("merged", [False, True], ids=["train", "merged"])
def test_authors_key_map_covers_b1_layout(merged: bool) -> None:
    model = create_model("b1", {"default": 309})
    if merged:
        model = reparameterize_model(model, ReparamLevel.PAPER, inplace=True)
    layout = _layout_b1()
    if merged:
        expected = {k for k in layout if _block_stem(k) not in BRANCH_STEMS}
    else:
        expected = {k for k, (_, only_merged) in layout.items() if not only_merged}
    mapping = authors_key_map(model)
    state = model.state_dict()
    assert set(mapping) == expected
    assert set(mapping.values()) == set(state)
    for authors, ours in mapping.items():
        assert tuple(state[ours].shape) == layout[authors][0], authors


def test_authors_key_map_names() -> None:
    model = create_model("b0", {"verb": 97, "noun": 300}, depths=(1, 2, 1, 1))
    mapping = authors_key_map(model)
    assert mapping["head.projection_verb.weight"] == "heads.verb.weight"
    assert mapping["head.projection_noun.bias"] == "heads.noun.bias"
    assert mapping["s1.pathway0_stem.conv.weight"] == "stem.conv.weight"
    assert mapping["s3.pathway0_res1.branch2.a_bn_small.running_mean"] == (
        "stages.1.blocks.1.time_mixer.k3.bn.running_mean"
    )
    assert mapping["s3.pathway0_res0.branch1_bn.bias"] == "stages.1.blocks.0.shortcut.bn.bias"
    assert mapping["s5.pathway0_res0.branch2.b_medium.weight"] == (
        "stages.3.blocks.0.freq_mixer.k11.conv.weight"
    )
    merged = authors_key_map(reparameterize_model(model, ReparamLevel.PAPER))
    assert merged["s2.pathway0_res0.branch2.b_reparam.bias"] == (
        "stages.0.blocks.0.freq_mixer.fused.bias"
    )
    with pytest.raises(ValueError, match="fully folded"):
        authors_key_map(reparameterize_model(model, ReparamLevel.FULL))
    with pytest.raises(ValueError, match="band mixers"):
        authors_key_map(create_model("b1_2d", {"default": 2}, depths=(1, 1, 1, 1)))


def test_authors_checkpoint_reproduces_reference_outputs() -> None:
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)["model_state"]
    model = create_model("b0", {"default": 309})
    mapping = authors_key_map(model)
    own = model.state_dict()
    assert set(state) == set(mapping), "authors' keys and the map disagree"
    for authors, ours in mapping.items():
        assert state[authors].shape == own[ours].shape, authors
    model.load_state_dict({mapping[k]: v for k, v in state.items()}, strict=True)
    model.eval()

    expected = np.load(EXPECTED)
    with torch.no_grad():
        logits = model(torch.from_numpy(expected["inputs"]))["default"]
    np.testing.assert_allclose(logits.numpy(), expected["logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits.softmax(-1).numpy(), expected["probs"], rtol=0, atol=1e-5)
