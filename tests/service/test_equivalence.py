"""The service's scores for a file equal the PyTorch b0 model fed ``arinext.model.frontend`` (1e-4).

This is the one service test that needs torch: it builds the real AudioRepInceptionNeXt b0
(``arinext.model.registry``), exports it with ``arinext.model.export`` (fully re-parameterised, as
served) and compares the served probabilities with the *train-form* torch model on the same
log-mels. Random weights get real BN statistics and larger head weights so that the softmax is far
from uniform and a wrong window, view or fold would show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arinext.model.audio_config import PRESETS
from arinext.model.frontend import clip_view
from arinext.model.labels import resolve_labels
from arinext.service.predict import window_starts
from tests.service.audio import encode_sf, signal
from tests.service.conftest import isolated_settings, serve_in_process

# The one dependency that may be absent (a serving install has no torch); the project's own
# modules are imported plainly, so a broken import fails instead of skipping.
torch = pytest.importorskip("torch", reason="compares with the PyTorch model (train extra)")
from arinext.model import export, registry  # noqa: E402  (they import torch)

PRESET = "speech_commands"


def _clip() -> tuple[np.ndarray, np.ndarray]:
    """A 2.5 s test signal at the preset's rate and its windows' log-mels, as served."""
    cfg = PRESETS[PRESET]
    x = signal(2.5, cfg.sample_rate, seed=3)[:, 0]
    views = np.stack([clip_view(x, s, cfg) for s in window_starts(len(x), cfg)])[:, None]
    return x, views


def _make_non_trivial(model: torch.nn.Module, calibration: torch.Tensor) -> torch.nn.Module:
    """Give BN layers real statistics and the head logits of a few units.

    At initialisation BN statistics are (0, 1) and the head outputs ~0, so every class scores
    1/35 and any bug would hide under the tolerance. Statistics are measured on the test's own
    log-mels (train-mode pass), affine parameters drawn away from (1, 0), and the head scaled.
    """
    generator = torch.Generator().manual_seed(1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            low, high = (0.05, 0.3) if not norm.weight.any() else (0.6, 1.4)
            norm.weight.uniform_(low, high, generator=generator)
            norm.bias.uniform_(-0.1, 0.1, generator=generator)
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average: one pass sets the statistics
        model.train()(calibration)
        model.eval()
        logits = model(calibration)[PRESET]
        head = model.heads[PRESET]
        factor = 4.0 / logits.abs().max()
        head.weight.mul_(factor)
        head.bias.mul_(factor)
    return model


@pytest.fixture(scope="module")
def b0(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    labels = resolve_labels(PRESET)
    model = registry.create_model("b0", heads={h: len(v) for h, v in labels.items()})
    model = _make_non_trivial(model, torch.from_numpy(_clip()[1]))
    directory = tmp_path_factory.mktemp("b0") / "b0-speech-commands"
    export.export_artifact(
        model,
        directory,
        name="b0-speech-commands-random",
        architecture="b0",
        frontend=PRESETS[PRESET],
        labels=labels,
        level="full",
        # The exporter compares logits on its own inputs, where float32 rounding through the
        # folded graph reaches ~1e-4; this test's criterion is on probabilities, below.
        atol=1e-3,
    )
    return model, directory


@pytest.mark.slow
def test_service_scores_equal_pytorch_b0_on_the_frontend(
    b0: tuple[torch.nn.Module, Path],
) -> None:
    model, directory = b0
    x, views = _clip()
    data = encode_sf(x[:, None], PRESETS[PRESET].sample_rate, "WAV", "FLOAT")
    with torch.no_grad():
        logits = model(torch.from_numpy(views))[PRESET]
    expected = torch.softmax(logits.double(), dim=1).numpy()
    assert expected.max() > 0.2, "weights too small for a meaningful comparison"

    with serve_in_process(isolated_settings(models=[directory])) as client:
        response = client.post(
            "/classify?top_k=35&windows=true", content=data, headers={"content-type": "audio/wav"}
        )
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]

    def dense(items: list[dict]) -> np.ndarray:
        out = np.zeros(expected.shape[1])
        for item in items:
            out[item["index"]] = item["score"]
        return out

    np.testing.assert_allclose(dense(prediction["top_k"]), expected.mean(axis=0), atol=1e-4)
    assert len(prediction["windows"]) == len(expected) > 1
    for window, want in zip(prediction["windows"], expected, strict=True):
        np.testing.assert_allclose(dense(window["top_k"]), want, atol=1e-4)
