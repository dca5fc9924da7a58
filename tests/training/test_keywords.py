"""``arinext train-keywords``: a tiny run writes an artifact the service verifies and serves."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from arinext.model.manifest import verify_artifact
from arinext.training.synth_speech import espeak_available, spoken
from tests.fresh_imports import heavy_imports

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def test_window_follows_the_phrases() -> None:
    from arinext.training.keywords import phrase_window

    assert phrase_window([0.5, 0.6, 0.7], margin_s=0.25, minimum_s=1.0) == 1.0
    assert phrase_window([1.4] * 20, margin_s=0.25, minimum_s=1.0) == 1.75


def test_recordings_folder_names_the_phrases(tmp_path: Path) -> None:
    from arinext.training.keywords_cli import read_recordings

    (tmp_path / "lights_on").mkdir()
    (tmp_path / "lights_on" / "a.wav").write_bytes(b"")
    assert read_recordings(tmp_path, ["lights on", "next slide"]) == {
        "lights on": [tmp_path / "lights_on" / "a.wav"]
    }
    (tmp_path / "lights_of").mkdir()
    with pytest.raises(SystemExit, match="names none of the phrases"):
        read_recordings(tmp_path, ["lights on"])


def test_registering_imports_no_heavy_modules() -> None:
    code = (
        "import argparse, arinext.training.keywords_cli\n"
        "arinext.training.keywords_cli.register(argparse.ArgumentParser().add_subparsers())"
    )
    assert heavy_imports(code) == []


def _tiny_recipe(**knobs: Any) -> Any:
    """A run of a few clips and one epoch: seconds, not minutes."""
    from arinext.training.keywords import KeywordRecipe

    tiny = {
        "per_phrase": 3,
        "held_out_per_phrase": 1,
        "vocabulary": 4,
        "near_misses": 1,
        "command_words": 0,
        "silence": 2,
        "copies": 1,
        "epochs": 1,
        "int8": False,
    }
    return KeywordRecipe(**{**tiny, **knobs})


def test_tiny_run_writes_a_served_artifact(tmp_path: Path) -> None:
    from arinext.service import teach
    from arinext.service.pipeline import Classifier
    from arinext.training.keywords import head_name, train_keywords

    recording = tmp_path / "lights on.wav"
    sf.write(recording, spoken("lights on", "en-us"), 16000)
    recipe = _tiny_recipe(recording_copies=2)
    stages: list[str] = []
    out = tmp_path / "kw"
    result = train_keywords(
        ["Lights on", "hey arinext, next slide"],
        out,
        recordings={"lights on": [recording]},
        recipe=recipe,
        workers=1,
        progress=lambda stage, done, total: stages.append(stage),
    )
    # The demo's teach tab turns these stages into its progress bar (it cannot import torch).
    assert list(dict.fromkeys(stages)) == list(teach.STAGES)
    manifest = verify_artifact(out)
    assert manifest.head(head_name(manifest.name)).labels == [
        "lights on",
        "hey arinext next slide",
        "_unknown_",
        "_silence_",
    ]
    assert result.labels == manifest.head(head_name(manifest.name)).labels
    keywords = manifest.extra["keywords"]
    assert keywords["phrases"] == ["lights on", "hey arinext next slide"]
    assert keywords["recipe"]["per_phrase"] == 3
    assert keywords["clips"]["recordings"] == {"lights on": 1}
    # The long phrase stretches the window past one second, and the front-end with it.
    assert manifest.frontend.clip_seconds == result.window_seconds > 1.0
    assert manifest.frontend.num_frames == 1 + (manifest.frontend.clip_samples - 1) // 320
    assert manifest.metrics["held_out_voices"]["keyword_clips"] == 2
    answer = Classifier.from_artifacts(out)(np.zeros(16000, dtype=np.float32), sample_rate=16000)
    assert answer.model_dump()


def test_a_run_is_repeatable_from_its_seed(tmp_path: Path) -> None:
    """Two runs of one recipe in one process (whose torch generator the first run has moved on,
    as an unseeded process starts anywhere) write the same graph."""
    from arinext.training.keywords import train_keywords

    recipe = _tiny_recipe()
    written = [
        verify_artifact(
            train_keywords(["lights on"], tmp_path / str(k), recipe=recipe, workers=1).artifact
        ).sha256
        for k in range(2)
    ]
    assert written[0] == written[1]


def test_a_tampered_backbone_is_refused_before_any_work(tmp_path: Path) -> None:
    import shutil

    from arinext.model.manifest import ArtifactError
    from arinext.service.settings import EMBEDDED_FP32_MODEL_DIR
    from arinext.training.keywords import train_keywords

    backbone = tmp_path / "backbone"
    shutil.copytree(EMBEDDED_FP32_MODEL_DIR, backbone)
    model = backbone / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-100] ^= 1
    model.write_bytes(bytes(data))
    stages: set[str] = set()
    with pytest.raises(ArtifactError):
        train_keywords(
            ["lights on"],
            tmp_path / "kw",
            backbone=backbone,
            progress=lambda stage, done, total: stages.add(stage),
        )
    assert not stages and not (tmp_path / "kw").exists()


def test_an_artifact_without_the_networks_input_is_refused_as_a_backbone(tmp_path: Path) -> None:
    import hashlib
    import shutil

    import onnx

    from arinext.model.manifest import ArtifactError, read_manifest, write_manifest
    from arinext.service.settings import EMBEDDED_FP32_MODEL_DIR
    from arinext.training.keywords.backbone import load_backbone

    other = tmp_path / "other"
    shutil.copytree(EMBEDDED_FP32_MODEL_DIR, other)
    graph = onnx.load(other / "model.onnx")
    graph.graph.input[0].name = "audio"  # a properly signed artifact, but not of this network
    for node in graph.graph.node:
        node.input[:] = ["audio" if name == "logmel" else name for name in node.input]
    data = graph.SerializeToString()
    (other / "model.onnx").write_bytes(data)
    manifest = read_manifest(other)
    write_manifest(other, manifest.model_copy(update={"sha256": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(ArtifactError, match="not a backbone for keywords"):
        load_backbone(other).voice_seed()
    assert load_backbone(str(EMBEDDED_FP32_MODEL_DIR)) is load_backbone()  # one per directory


def test_the_served_int8_model_is_refused_as_a_backbone_with_its_fp32_named() -> None:
    from arinext.model.manifest import ArtifactError
    from arinext.service.settings import EMBEDDED_MODEL_DIR
    from arinext.training.keywords.backbone import load_backbone

    with pytest.raises(ArtifactError, match=r"int8 artifact cannot be a backbone.*fp32 artifact"):
        load_backbone(EMBEDDED_MODEL_DIR).voice_seed()


def test_cli_parses_and_refuses_unknown_recordings(tmp_path: Path) -> None:
    from arinext.training.keywords_cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train-keywords", "lights on", "--out", str(tmp_path / "o")])
    assert args.phrases == ["lights on"] and args.tune == "head" and not args.fp32
    assert args.progress == "bars"


def test_json_progress_is_a_line_per_stage_edge_and_percent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from arinext.service.teach import parse_progress
    from arinext.training.keywords_cli import JsonProgress

    progress = JsonProgress()
    for done in range(1001):
        progress("training", done, 1000)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 101  # 0 %, 1 %, ..., 100 %
    assert json.loads(lines[-1]) == {
        "event": "progress",
        "stage": "training",
        "done": 1000,
        "total": 1000,
    }
    assert [parse_progress(line) for line in lines[:2]] == [
        ("training", 0, 1000),
        ("training", 10, 1000),
    ]
