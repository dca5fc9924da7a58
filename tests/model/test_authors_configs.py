"""Any network the authors' cfg describes imports and matches their forward pass through ORT.

Checkpoints are generated here in the authors' layout (``tests/model/authors_layout.py``, which is
itself checked against the reference layout, the reference checkpoint and its golden logits):
widths 48 and 96 in train form and merged, a two-head EPIC-KITCHENS-100 checkpoint, 416- and
1024-frame configs, and a depth-101 network with per-block kernels and grouped bottlenecks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from arinext.model.checkpoint import import_checkpoint, load_authors_checkpoint
from arinext.model.inception_next import AudioRepInceptionNeXt
from arinext.model.manifest import INPUT_NAME, MODEL_FILE, ReparamLevel, verify_artifact
from tests.fixtures import LAYOUT_B1, REFERENCE_CHECKPOINT, REFERENCE_EXPECTED
from tests.model.authors_layout import (
    AuthorsCfg,
    checkpoint,
    forward,
    layout,
    log_mel_like,
    merged_state,
    random_state,
)

TOLERANCE = 1e-4  # acceptance: ONNX Runtime logits within 1e-4 of the authors' forward pass

EPIC_KITCHENS = dict(
    dataset="epic-kitchens-100",
    sample_rate=24000,
    window_ms=10,
    hop_ms=5,
    clip_seconds=2.08,
    frames=416,
    views=5,
)
CASES = {
    "w48": (AuthorsCfg(width=48), False),
    "w48-merged": (AuthorsCfg(width=48), True),
    "w96": (AuthorsCfg(width=96, frames=256, clip_seconds=2.559), False),
    "w96-merged": (AuthorsCfg(width=96, frames=256, clip_seconds=2.559), True),
    "two-heads-416": (AuthorsCfg(width=32, classes=[97, 300], **EPIC_KITCHENS), False),
    "epic-sounds-416-merged": (
        AuthorsCfg(width=24, classes=[44], **{**EPIC_KITCHENS, "dataset": "epic-sounds"}),
        True,
    ),
    "1024-frames": (AuthorsCfg(width=16, frames=1024, clip_seconds=10.239), False),
    "depth101-block-kernels-groups": (
        AuthorsCfg(
            width=8,
            depth=101,
            num_groups=2,
            temp_kernels=[[3], [21], [21, 15], [31], [13]],
            freq_kernels=[[9], [17], [21], [21], [25]],
            blocks_with_temp_kernel=[3, 2, 20, 3],
            time_strides=[1, 2, 2, 1],
            frames=256,
            clip_seconds=2.559,
        ),
        False,
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def authors(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    cfg, merged = CASES[request.param]
    state = random_state(cfg, seed=len(request.param))
    if merged:
        state = merged_state(state, cfg)
    path = tmp_path_factory.mktemp(request.param) / "checkpoint.pyth"
    torch.save(checkpoint(state, cfg, merged), path)
    gen = torch.Generator().manual_seed(1)
    inputs = log_mel_like(2, cfg, gen)
    reference = forward(state, inputs, cfg, merged=merged)
    yield {
        "name": request.param,
        "cfg": cfg,
        "merged": merged,
        "path": path,
        "inputs": inputs,
        "reference": reference,
    }
    path.unlink()


def _heads(cfg: AuthorsCfg, dataset_head: str) -> dict[str, str]:
    """Our head name -> the authors' projection."""
    if len(cfg.classes) == 2:
        return {"verb": "projection_verb", "noun": "projection_noun"}
    return {dataset_head: "projection"}


def test_torch_model_matches_the_authors_forward(authors: dict) -> None:
    cfg = authors["cfg"]
    model, info = load_authors_checkpoint(authors["path"])
    assert info.merged == authors["merged"]
    assert info.width == cfg.width
    assert isinstance(model, AudioRepInceptionNeXt)
    params = info.architecture_params
    assert params["depths"] == list(cfg.depths)
    assert params["expansion"] == 4 * cfg.num_groups
    with torch.no_grad():
        logits = model(authors["inputs"])
    for ours, theirs in _heads(cfg, next(iter(info.heads))).items():
        reference = authors["reference"][theirs]
        assert reference.abs().max() > 0.5  # not a comparison of near-zero tensors
        diff = (logits[ours] - reference).abs().max().item()
        assert diff <= TOLERANCE, f"{ours}: {diff}"
    if not info.merged:  # the recorded arguments rebuild the network (training's --init)
        rebuilt = AudioRepInceptionNeXt(heads=info.heads, **params).state_dict()
        assert {k: v.shape for k, v in rebuilt.items()} == {
            k: v.shape for k, v in model.state_dict().items()
        }


def test_artifact_matches_the_authors_forward(authors: dict, tmp_path: Path) -> None:
    # The full fold for every case; the paper level too where the weights arrive merged.
    levels = [ReparamLevel.FULL, ReparamLevel.PAPER] if authors["merged"] else [ReparamLevel.FULL]
    for level in levels:
        _check_artifact(authors, level, tmp_path / level.value)


def _check_artifact(authors: dict, level: ReparamLevel, out: Path) -> None:
    cfg = authors["cfg"]
    manifest = import_checkpoint(authors["path"], out, level=level)
    assert verify_artifact(out) == manifest
    assert manifest.reparameterized is level
    assert manifest.frontend.num_frames == cfg.frames
    assert manifest.architecture_params["width"] == cfg.width
    assert manifest.architecture_params["depths"] == list(cfg.depths)
    verification = manifest.verification
    assert verification is not None and verification.max_abs_diff <= verification.tolerance
    session = ort.InferenceSession(out / MODEL_FILE, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    run = session.run(names, {INPUT_NAME: authors["inputs"].numpy()})
    outputs = dict(zip(names, run, strict=True))
    for head in manifest.heads:
        theirs = _heads(cfg, head.name)[head.name]
        reference = authors["reference"][theirs].numpy()
        diff = float(np.abs(outputs[head.output] - reference).max())
        assert diff <= TOLERANCE, f"{authors['name']} {head.name} at {level}: {diff}"


def test_generated_layout_is_the_reference_layout() -> None:
    """The generator writes exactly the keys and shapes of the authors' B1 and w32 files."""
    expected = {}
    for line in LAYOUT_B1.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            dims = shape.removesuffix(" [merged]").strip("()").split(",")
            expected[key] = tuple(int(d) for d in dims if d.strip())
    assert layout(AuthorsCfg(width=64), merged=True) == expected
    state = torch.load(REFERENCE_CHECKPOINT, map_location="cpu", weights_only=True)["model_state"]
    assert layout(AuthorsCfg(width=32)) == {k: tuple(v.shape) for k, v in state.items()}


def test_authors_forward_reproduces_the_golden_logits() -> None:
    """The independent forward pass above is the authors' network: their golden values."""
    state = torch.load(REFERENCE_CHECKPOINT, map_location="cpu", weights_only=True)["model_state"]
    with np.load(REFERENCE_EXPECTED) as data:
        inputs, logits = torch.from_numpy(data["inputs"]), data["logits"]
    cfg = AuthorsCfg(width=32)
    for merged, weights in ((False, dict(state)), (True, merged_state(dict(state), cfg))):
        out = forward(weights, inputs, cfg, merged=merged)["projection"].numpy()
        np.testing.assert_allclose(out, logits, rtol=0, atol=1e-4)
