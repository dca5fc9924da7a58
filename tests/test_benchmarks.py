"""The documented benchmark commands run and print the tables the docs quote (not their numbers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arinext.model.backends import available_backends
from arinext.training.synth_speech import espeak_available, synthesize_dataset

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: float) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rows(table: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| model") and "---" not in line
    ]


def test_frontend_speed_prints_a_row_per_preset_and_function() -> None:
    rows = _rows(_run("frontend_speed.py", "--runs", "3", timeout=120))
    stream = {r[0]: r for r in rows if len(r) == 4 and r[0] != "windows"}
    clips = {r[0]: r for r in rows if len(r) == 5 and r[0] != "front-end"}
    rows = [r for r in rows if len(r) == 7]
    assert set(clips) == {"default model", "vggsound", "speech_commands", "epic_sounds"}
    assert set(stream) == {"frame grid (served)", "exact 0.25 s", "whole windows"}
    # The served grid computes the frames a hop adds (12.5 on average, plus the padded first).
    assert float(stream["frame grid (served)"][1]) <= 14 < float(stream["exact 0.25 s"][1])
    assert {(r[0], r[3]) for r in rows if r[0] != "preset"} == {
        (preset, fn)
        for preset in ("vggsound", "speech_commands", "epic_sounds")
        for fn in ("log_mel", "clip_view")
    }
    assert all(float(r[4]) > 0 for r in rows if r[0] != "preset")


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 17 exports and two quantisations; minutes on a busy 2-core machine
def test_model_speed_prints_every_form_precision_and_backend() -> None:
    # b0 alone: every row kind, at a third of the time b1 and the Slow-Fast add (their sizes are
    # tests/model/test_complexity.py's).
    rows = _rows(_run("model_speed.py", "--quick", "--archs", "b0", timeout=1100))
    served = [(r[0], r[1], r[3]) for r in rows]
    expected = [
        ("b0", "train form", "onnxruntime"),
        ("b0", "paper-merged", "onnxruntime"),
        ("b0", "full fold", "onnxruntime"),
        ("b0", "full fold", "onnxruntime"),
    ]
    if "openvino" in available_backends():
        expected += [("b0", "paper-merged", "openvino")] + [("b0", "full fold", "openvino")] * 3
    assert served == expected
    precisions = [r[2] for r in rows]
    assert precisions.count("int8") == (2 if "openvino" in available_backends() else 1)
    params = {(r[0], r[1]): r[4] for r in rows}
    assert params[("b0", "train form")] == "3.09M"
    assert params[("b0", "paper-merged")] == "3.02M"
    assert all(float(r[6]) > 0 and float(r[9]) > 0 for r in rows)
    baseline = next(r for r in rows if r[:4] == ["b0", "paper-merged", "fp32", "onnxruntime"])
    assert baseline[8] == baseline[11] == "1.00x"


def test_artifact_speed_times_each_artifact_on_every_backend(tmp_path: Path) -> None:
    from arinext.model.quantize import quantize_artifact
    from tests.model.band_artifact import make_band_artifact

    make_band_artifact(tmp_path / "fp32")
    quantize_artifact(tmp_path / "fp32", tmp_path / "int8", calibration_clips=8, check_clips=8)
    out = _run(
        "artifact_speed.py",
        str(tmp_path / "fp32"),
        str(tmp_path / "int8"),
        "--runs",
        "5",
        timeout=300,
    )
    rows = [r for r in _rows(out) if r[0] in ("fp32", "int8")]
    openvino = "openvino" in available_backends()
    assert [(r[0], r[1]) for r in rows] == [("fp32", "fp32")] * (3 if openvino else 1) + [
        ("int8", "int8")
    ] * (2 if openvino else 1)
    assert rows[0][4] == "1.00x" and all(float(r[3]) > 0 and float(r[5]) > 0 for r in rows)


@pytest.mark.system
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_unknown_false_accepts_splits_the_rate_by_what_was_said(tmp_path: Path) -> None:
    from arinext.service.settings import EMBEDDED_MODEL_DIR

    variants = ["plain", "f1", "f2", "f3", "m1", "m2", "m3", "m4", "Storm", "croak"]
    synthesize_dataset(
        tmp_path, seed=5, per_voice=1, words=["yes"], variants=variants, unknown_per_voice=6
    )
    out = _run(
        "unknown_false_accepts.py",
        "--model",
        str(EMBEDDED_MODEL_DIR),
        "--data-root",
        str(tmp_path),
        timeout=120,
    )
    rows = {r[0]: r for r in _rows(out) if len(r) == 4}
    assert set(rows) == {"what was said", "near miss", "other word", "phrase", "all"}
    kinds = [rows[k] for k in ("near miss", "other word", "phrase")]
    assert sum(int(r[1]) for r in kinds) == int(rows["all"][1]) == 6  # one test voice, 6 clips
    assert sum(int(r[2]) for r in kinds) == int(rows["all"][2])


def test_window_offsets_prints_a_row_per_distance_and_the_clean_clips(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from arinext.service.settings import EMBEDDED_MODEL_DIR
    from arinext.training.datasets.recordings import list_recordings
    from tests.training.test_recordings import make_recordings

    folder = make_recordings(tmp_path / "recordings")
    # Scenes need ten seconds of held-out room noise: the last fifth of a long background.
    noise = np.random.default_rng(1).normal(0, 0.02, 60 * 16000)
    sf.write(folder / "_background_noise_" / "room.flac", noise, 16000, format="FLAC")
    out = _run(
        "window_offsets.py",
        *("--recordings", str(folder), "--model", str(EMBEDDED_MODEL_DIR)),
        *("--split", "test", "--scenes", "3"),
        timeout=120,
    )
    rows = [r for r in _rows(out) if len(r) == 5][1:]  # after the header
    assert [r[0] for r in rows][-1] == "the clips alone, clean"
    assert [r[0] for r in rows][:2] == ["0.00-0.05", "0.05-0.10"] and len(rows) == 11
    said = [c for c in list_recordings(folder, "test") if c.word != "_silence_"]
    assert int(rows[-1][1]) == len(said)
    # Nine words said, each heard by the windows within 0.6 s of it (4 a second at hop 0.25).
    assert 9 * 4 <= sum(int(r[1]) for r in rows[:-1]) <= 9 * 5
    # The tones are no words of the default model: never right.
    assert all(r[2] == "0.0%" for r in rows)


def test_stream_tuning_records_the_chosen_setting_in_the_manifest(tmp_path: Path) -> None:
    import shutil

    import numpy as np
    import soundfile as sf

    from arinext.model.manifest import read_manifest, verify_artifact
    from arinext.service.settings import EMBEDDED_MODEL_DIR
    from tests.training.test_recordings import make_recordings

    folder = make_recordings(tmp_path / "recordings")
    noise = np.random.default_rng(1).normal(0, 0.02, 60 * 16000)
    sf.write(folder / "_background_noise_" / "room.flac", noise, 16000, format="FLAC")
    model = tmp_path / "model"
    shutil.copytree(EMBEDDED_MODEL_DIR, model)
    grid = ("--hops", "0.25", "--votes", "1,2", "--thresholds", "0.5,0.9", "--debounces", "1.0")
    common = ("--recordings", str(folder), "--model", str(model), "--split", "test")
    out = _run(
        "stream_tuning.py",
        *common,
        "--scenes",
        "2",
        "--seed",
        "1,2",
        *grid,
        "--record",
        "--max-wrong",
        "1000",
        timeout=120,
    )
    rows = {(r[1], r[2]): r for r in _rows(out) if len(r) == 6 and r[0] == "0.25"}
    assert set(rows) == {("1", "0.5"), ("1", "0.9"), ("2", "0.5"), ("2", "0.9")}
    tuned = verify_artifact(model).detection
    assert tuned is not None and (str(tuned.votes), str(tuned.threshold)) in rows
    # The tones are no words: nothing detected, so the fewest wrong detections decide.
    fewest = min(float(r[5]) for r in rows.values())
    assert tuned.measured["detected"] == 0 and tuned.measured["wrong_per_minute"] <= fewest + 5e-3
    assert tuned.measured["keywords"] == 2 * 2 * 3 and "--record" in tuned.measured["command"]
    # Nothing within the bound: nothing written, and the exit status says so.
    refused = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "stream_tuning.py"),
            *common,
            "--scenes",
            "1",
            *grid,
            "--record",
            "--max-wrong",
            "-1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1 and "nothing recorded" in refused.stdout
    assert read_manifest(model).detection == tuned
