"""ONNX export: the artifact contract, faithfulness to torch, and all-or-nothing writing."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import arinext.model.export as export_module
from arinext.model.audio_config import AudioConfig, get_preset
from arinext.model.complexity import count_params
from arinext.model.export import ExportError, export_artifact
from arinext.model.manifest import (
    INPUT_NAME,
    MANIFEST_FILE,
    MODEL_FILE,
    Provenance,
    verify_artifact,
)
from arinext.model.registry import create_model
from arinext.model.reparam import ReparamLevel, reparameterize_model

# A small input keeps the write/refuse tests cheap; what they check does not depend on its size.
TINY = AudioConfig(
    name="tiny",
    sample_rate=16000,
    window_ms=20,
    hop_ms=10,
    clip_seconds=0.639,
    num_frames=64,
    n_mels=32,
)


def _labels(heads: Mapping[str, int]) -> dict[str, list[str]]:
    return {head: [f"{head}_{i}" for i in range(n)] for head, n in heads.items()}


def randomized(model: nn.Module, seed: int = 0, frames: int = 512, mels: int = 128) -> nn.Module:
    """Calibrate BN statistics on noise, then perturb them and the affine parameters.

    With default statistics (mean 0, var 1, gamma 1, beta 0) a wrong BN fold is invisible.
    Ranges follow the reference fixtures: gamma ~ 1 +- 0.3, small gammas where the network
    zero-initialises them (end of each residual body), heads scaled to logits of O(5), so an
    absolute tolerance means what it means for a trained model.
    """
    torch.manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    x = torch.randn(1, 1, frames, mels) * 2 - 4
    with torch.no_grad():
        for bn in bns:
            residual_end = not bn.weight.any()
            bn.reset_running_stats()
            bn.momentum = None  # plain average over the calibration batch
            bn.weight.uniform_(0.05, 0.25) if residual_end else bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
        model.train()
        model(x)
        for bn in bns:
            bn.momentum = 0.1
            bn.running_mean.add_(0.05 * torch.randn_like(bn.running_mean))
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
        model.eval()
        logits = model(x)
        for name, head in model.heads.items():
            scale = 5.0 / logits[name].abs().max()
            head.weight.mul_(scale)
            head.bias.mul_(scale)
    return model


def _torch_logits(model: nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in model.eval()(torch.from_numpy(x)).items()}


def _ort_logits(directory: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(directory / MODEL_FILE, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {INPUT_NAME: x}), strict=True))


@pytest.fixture(scope="module")
def b0() -> nn.Module:
    return randomized(create_model("b0", {"vggsound": 309}))


@pytest.fixture(scope="module")
def b0_full(b0: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "b0-full"
    export_artifact(
        b0,
        out,
        name="b0-test",
        architecture="b0",
        frontend=get_preset("vggsound"),
        labels=_labels({"vggsound": 309}),
        level="full",
        metrics={"top1": 0.0},
        extra={"note": "random weights"},
    )
    return out


def test_onnx_interface(b0_full: Path) -> None:
    graph_model = onnx.load(b0_full / MODEL_FILE)
    onnx.checker.check_model(graph_model)
    (graph_input,) = graph_model.graph.input
    assert graph_input.name == INPUT_NAME
    tensor = graph_input.type.tensor_type
    assert tensor.elem_type == onnx.TensorProto.FLOAT
    dims = tensor.shape.dim
    assert [d.dim_param for d in dims[::2]] == ["batch", "frames"]
    assert [d.dim_value for d in dims[1::2]] == [1, 128]
    (graph_output,) = graph_model.graph.output
    assert graph_output.name == "logits_vggsound"
    assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph_output.type.tensor_type.shape.dim[0].dim_param == "batch"
    opsets = {o.domain: o.version for o in graph_model.opset_import}
    assert opsets[""] >= 17


def test_full_fold_has_no_batchnorm(b0_full: Path) -> None:
    ops = {node.op_type for node in onnx.load(b0_full / MODEL_FILE).graph.node}
    assert "BatchNormalization" not in ops
    assert "Conv" in ops


def test_manifest_describes_the_exported_model(b0: nn.Module, b0_full: Path) -> None:
    manifest = verify_artifact(b0_full)
    assert manifest.name == "b0-test"
    assert manifest.reparameterized == "full"
    assert manifest.frontend == get_preset("vggsound")
    assert [(h.name, h.output, len(h.labels)) for h in manifest.heads] == [
        ("vggsound", "logits_vggsound", 309)
    ]
    assert manifest.heads[0].activation == "softmax"
    assert manifest.num_params == count_params(reparameterize_model(b0, ReparamLevel.FULL))
    assert manifest.num_params < count_params(b0)
    assert 0.5 < manifest.gflops < 0.71  # C=32 is 0.71 G in train form, less once folded
    assert manifest.provenance.command
    assert manifest.metrics == {"top1": 0.0}
    assert manifest.extra == {"note": "random weights"}


def test_onnx_matches_torch_for_any_batch_and_length(b0: nn.Module, b0_full: Path) -> None:
    rng = np.random.default_rng(1)
    for shape in ((2, 1, 512, 128), (1, 1, 300, 128)):
        x = (rng.standard_normal(shape) * 3 - 6).astype(np.float32)
        expected = _torch_logits(b0, x)["vggsound"]
        got = _ort_logits(b0_full, x)["logits_vggsound"]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_two_heads_at_416_frames(tmp_path: Path) -> None:
    model = randomized(create_model("b0", {"verb": 97, "noun": 300}), seed=1)
    frontend = get_preset("epic_kitchens_100")
    assert frontend.num_frames == 416
    manifest = export_artifact(
        model,
        tmp_path / "epic",
        name="epic",
        architecture="b0",
        frontend=frontend,
        labels=_labels({"verb": 97, "noun": 300}),
        level="paper",
    )
    assert manifest.reparameterized == "paper"
    assert [(h.name, h.output) for h in manifest.heads] == [
        ("verb", "logits_verb"),
        ("noun", "logits_noun"),
    ]
    x = (np.random.default_rng(2).standard_normal((2, 1, 416, 128)) * 3 - 6).astype(np.float32)
    expected = _torch_logits(model, x)
    got = _ort_logits(tmp_path / "epic", x)
    assert set(got) == {"logits_verb", "logits_noun"}
    for head, n in (("verb", 97), ("noun", 300)):
        assert got[f"logits_{head}"].shape == (2, n)
        np.testing.assert_allclose(got[f"logits_{head}"], expected[head], rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    return randomized(create_model("b0", {"vggsound": 5}), 2, TINY.num_frames, TINY.n_mels)


def _export_tiny(model: nn.Module, out: Path, **kwargs: object) -> object:
    return export_artifact(
        model,
        out,
        name="tiny",
        architecture="b0",
        frontend=TINY,
        labels=_labels({"vggsound": 5}),
        provenance=Provenance(source="test"),
        **kwargs,
    )


def _siblings(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_unfaithful_export_raises_and_writes_nothing(
    tiny_model: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupting(model: nn.Module, level: ReparamLevel, inplace: bool = False) -> nn.Module:
        folded = reparameterize_model(model, level, inplace=inplace)
        with torch.no_grad():
            next(folded.parameters()).add_(0.05)
        return folded

    monkeypatch.setattr(export_module, "reparameterize_model", corrupting)
    with pytest.raises(ExportError, match="differ"):
        _export_tiny(tiny_model, tmp_path / "out")
    assert _siblings(tmp_path) == []


def test_failed_export_keeps_the_previous_artifact(
    tiny_model: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    first = _export_tiny(tiny_model, out, level="paper")
    before = (out / MODEL_FILE).read_bytes()

    def broken(model: nn.Module, level: ReparamLevel, inplace: bool = False) -> nn.Module:
        raise RuntimeError("boom")

    monkeypatch.setattr(export_module, "reparameterize_model", broken)
    with pytest.raises(ExportError, match="boom"):
        _export_tiny(tiny_model, out, level="full")
    assert (out / MODEL_FILE).read_bytes() == before
    assert verify_artifact(out) == first
    assert _siblings(tmp_path) == ["out"]


def test_existing_artifact_is_replaced(tiny_model: nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _export_tiny(tiny_model, out, level="none")
    manifest = _export_tiny(tiny_model, out, level="full")
    assert verify_artifact(out) == manifest
    assert manifest.reparameterized == "full"
    assert _siblings(tmp_path) == ["out"]
    assert _siblings(out) == sorted([MANIFEST_FILE, MODEL_FILE])


def test_refuses_to_replace_a_non_artifact(tiny_model: nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ExportError, match="not an artifact"):
        _export_tiny(tiny_model, out)
    assert _siblings(out) == ["notes.txt"]
    _export_tiny(tiny_model, out, overwrite=True)
    assert _siblings(out) == sorted([MANIFEST_FILE, MODEL_FILE])


def test_caller_model_is_left_alone(tiny_model: nn.Module, tmp_path: Path) -> None:
    model = copy.deepcopy(tiny_model).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _export_tiny(model, tmp_path / "out", level="full")
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"other": ["a"] * 5}, "heads"),
        ({"vggsound": ["a", "b"]}, "5 outputs but 2 labels"),
    ],
)
def test_label_mismatch_is_refused(
    tiny_model: nn.Module, tmp_path: Path, labels: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(ExportError, match=message):
        export_artifact(
            tiny_model, tmp_path / "out", name="x", architecture="b0", frontend=TINY, labels=labels
        )
    assert _siblings(tmp_path) == []


def test_invalid_metadata_is_refused_before_exporting(
    tiny_model: nn.Module, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="invalid artifact metadata"):
        export_artifact(
            tiny_model,
            tmp_path / "out",
            name="has spaces",
            architecture="b0",
            frontend=TINY,
            labels=_labels({"vggsound": 5}),
        )
    assert _siblings(tmp_path) == []
