"""`arinext export` writes an artifact the service serves, computing what the run's model does;
`arinext evaluate` measures runs and artifacts alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from arinext.model.backends import available_backends
from arinext.model.frontend import log_mel_views
from arinext.model.manifest import verify_artifact
from arinext.service.decoding import decode_audio, resample
from arinext.service.loading import load_model
from arinext.training.checkpoints import load_run
from tests.training.conftest import TrainedRun, run_cli


@pytest.fixture(scope="module")
def artifact(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Test metrics measured on the best checkpoint travel into the manifest.
    assert run_cli("evaluate", trained_run.path, "--split", "test") == 0
    out = tmp_path_factory.mktemp("artifacts") / "separable"
    assert run_cli("export", trained_run.path, "--out", out, "--name", "separable-tiny") == 0
    return out


def test_export_is_served_and_matches_torch(
    trained_run: TrainedRun, artifact: Path, learnable_root: Path
) -> None:
    manifest = verify_artifact(artifact)
    model, cfg, payload = load_run(trained_run.path)
    assert manifest.name == "separable-tiny" and manifest.reparameterized == "full"
    assert manifest.frontend == cfg.audio_config()  # the overridden front-end travels with it
    assert manifest.frontend.num_frames == 50
    assert [h.name for h in manifest.heads] == ["speech_commands"]
    assert manifest.heads[0].labels == payload["labels"]["speech_commands"]
    assert manifest.metrics["epoch"] == payload["epoch"]
    assert manifest.metrics["validation"]["top1"] == payload["metrics"]["top1"]
    assert manifest.metrics["test"]["top1"] >= 0.9
    assert manifest.extra["dataset"] == "speech_commands"

    served = load_model(artifact)  # the service's loader (verifies, opens, warms up)
    for wav in (
        sorted(learnable_root.glob("yes/*.wav"))[:2] + sorted(learnable_root.glob("up/*.wav"))[:2]
    ):
        decoded = decode_audio(wav.read_bytes(), max_seconds=30)
        samples = resample(decoded.samples, decoded.sample_rate, manifest.frontend.sample_rate)
        views = log_mel_views(samples, manifest.frontend)
        with torch.no_grad():
            expected = model(torch.from_numpy(views))["speech_commands"].numpy()
        np.testing.assert_allclose(served.run(views)["speech_commands"], expected, atol=1e-4)


def test_evaluate_run_and_artifact_agree(
    trained_run: TrainedRun, artifact: Path, learnable_root: Path, tmp_path: Path
) -> None:
    run_report = json.loads((trained_run.path / "eval_test.json").read_text())
    assert run_report["split"] == "test" and run_report["checkpoint"] == "best"
    output = tmp_path / "artifact_test.json"
    code = run_cli(
        "evaluate", artifact, "--data-root", learnable_root, "--split", "test",
        "--output", output, "--num-workers", 0,
    )  # fmt: skip
    assert code == 0
    artifact_report = json.loads(output.read_text())
    for key in ("top1", "top5", "mAP", "AUC", "num_clips"):
        assert artifact_report["metrics"][key] == pytest.approx(
            run_report["metrics"][key], abs=1e-6
        ), key
    assert artifact_report["backend"] == "onnxruntime"


@pytest.mark.skipif("openvino" not in available_backends(), reason="needs the openvino extra")
def test_evaluate_an_artifact_on_openvino(
    artifact: Path, learnable_root: Path, tmp_path: Path
) -> None:
    """`--backend openvino` scores the artifact as `ARINEXT_BACKEND=openvino` serves it."""
    reports = {}
    for backend, precision in (("onnxruntime", "auto"), ("openvino", "f32")):
        output = tmp_path / f"{backend}.json"
        code = run_cli(
            "evaluate", artifact, "--data-root", learnable_root, "--split", "test",
            "--output", output, "--num-workers", 0, "--backend", backend,
            "--precision", precision,
        )  # fmt: skip
        assert code == 0
        reports[backend] = json.loads(output.read_text())
    assert reports["openvino"]["backend"] == "openvino"
    assert reports["openvino"]["precision"] == "f32"
    for key in ("top1", "top5", "num_clips"):
        assert reports["openvino"]["metrics"][key] == pytest.approx(
            reports["onnxruntime"]["metrics"][key], abs=1e-6
        ), key
