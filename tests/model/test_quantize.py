"""``arinext quantize``: int8 artifacts that agree with fp32, and every refusal writes nothing."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from arinext.cli import main
from arinext.model.backends import open_session
from arinext.model.frontend import log_mel_views
from arinext.model.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    DetectionSettings,
    arinext_version,
    read_manifest,
    verify_artifact,
    write_manifest,
)
from arinext.model.quantize import (
    DEFAULT_MIN_AGREEMENT,
    SCHEMES,
    Agreement,
    QuantizeError,
    float_ends,
    float_mixing_paths,
    quantize_artifact,
    split_clips,
)
from tests.model.band_artifact import CFG, band_tone, make_band_artifact

CLASSES = 6


def _write_clips(root: Path, per_class: int, seed: int) -> list[str]:
    """WAV clips of every class as ``band<k>/<i>.wav``; their relative paths."""
    rng = np.random.default_rng(seed)
    written = []
    for i in range(per_class * CLASSES):
        k = i % CLASSES
        relative = f"band{k}/clip{seed}_{i}.wav"
        (root / f"band{k}").mkdir(parents=True, exist_ok=True)
        sf.write(root / relative, band_tone(CFG, CLASSES, k, rng), CFG.sample_rate, "PCM_16")
        written.append(relative)
    return written


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Speech Commands layout: training clips, ``validation_list.txt``, ``testing_list.txt``.

    The test clips are not audio at all: quantisation must never open them (it would warn).
    """
    root = tmp_path_factory.mktemp("clips")
    _write_clips(root, per_class=4, seed=0)
    validation = _write_clips(root, per_class=3, seed=1)
    (root / "validation_list.txt").write_text("\n".join(validation) + "\n")
    test = [f"band{k}/test_{k}.wav" for k in range(CLASSES)]
    for relative in test:
        (root / relative).write_bytes(b"RIFF not really a wav")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    (root / "README.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fp32") / "band"
    make_band_artifact(directory)
    return directory


def _views(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % CLASSES
    views = [log_mel_views(band_tone(CFG, CLASSES, int(k), rng), CFG) for k in labels]
    return np.concatenate(views).astype(np.float32), labels


def test_split_keeps_the_test_split_out_and_checks_on_validation(clips: Path) -> None:
    calibration, check = split_clips(clips)
    names = {p.relative_to(clips).as_posix() for p in calibration + check}
    listed = set((clips / "validation_list.txt").read_text().split())
    assert {p.relative_to(clips).as_posix() for p in check} == listed
    assert not names & set((clips / "testing_list.txt").read_text().split())
    assert len(calibration) == 4 * CLASSES and len(set(calibration) & set(check)) == 0
    assert split_clips(clips, seed=1)[0] != calibration  # the seed orders the clips
    assert sorted(split_clips(clips, seed=1)[0]) == sorted(calibration)


def test_split_without_lists_halves_a_plain_folder(tmp_path: Path) -> None:
    _write_clips(tmp_path, per_class=1, seed=0)
    calibration, check = split_clips(tmp_path)
    assert (len(calibration), len(check)) == (3, 3)
    assert not set(calibration) & set(check)


def test_quantized_artifact_agrees_with_fp32_and_records_how(
    fp32: Path, clips: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "band-int8"
    with caplog.at_level(logging.WARNING, logger="arinext.model.quantize"):
        manifest = quantize_artifact(fp32, out, calibration=clips)
    assert "skipping" not in caplog.text  # the undecodable test clips were never opened
    assert verify_artifact(out) == manifest
    source = read_manifest(fp32)
    record = manifest.quantization
    assert manifest.precision == "int8" and source.precision == "fp32"
    assert record.source_sha256 == source.sha256 != manifest.sha256
    assert (record.calibration_clips, record.check_clips) == (4 * CLASSES, 3 * CLASSES)
    assert record.top1_agreement == 1.0 and record.min_agreement == DEFAULT_MIN_AGREEMENT
    assert 0 <= record.max_prob_diff < 0.05 and record.mean_prob_diff <= record.max_prob_diff
    # The clips' folders are the head's labels, so both accuracies were measured too.
    assert record.check_top1_fp32 == record.check_top1_int8 == 1.0
    assert record.refused == []  # the first scheme held
    assert manifest.metrics == {"fp32": source.metrics}  # fp32 numbers are not claimed as int8's
    assert (manifest.name, manifest.heads, manifest.frontend) == (
        source.name,
        source.heads,
        source.frontend,
    )
    graph = (out / MODEL_FILE).read_bytes()
    assert b"QuantizeLinear" in graph and b"DequantizeLinear" in graph
    # On fresh clips the int8 graph still answers every class right.
    views, labels = _views(30, seed=7)
    logits = open_session(out / MODEL_FILE).run(["logits_bands"], {"logmel": views})[0]
    assert (logits.argmax(axis=1) == labels).all()


def test_without_clips_it_calibrates_on_synthetic_sounds_and_warns(
    fp32: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="arinext.model.quantize"):
        manifest = quantize_artifact(
            fp32, tmp_path / "int8", calibration_clips=16, check_clips=16, min_agreement=0.5
        )
    assert "no calibration clips given" in caplog.text
    assert manifest.quantization.calibration == "synthetic"
    assert manifest.quantization.calibration_clips == 16


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["quantize", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_the_artifact_and_says_how_well_it_agrees(
    fp32: Path, clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "int8"
    code, stdout, stderr = _cli(capsys, str(fp32), "--out", str(out), "--calibration", str(clips))
    assert code == 0, stderr
    assert "top-1 agreement 100.00%" in stdout
    written = json.loads((out / MANIFEST_FILE).read_text())
    assert written["precision"] == "int8"
    assert written["provenance"]["source"] == str(fp32)
    assert written["provenance"]["arinext_version"] == arinext_version()


def _corrupt_bytes(artifact: Path) -> None:
    model = artifact / MODEL_FILE
    model.write_bytes(model.read_bytes()[:-100])


def _corrupt_graph_with_matching_checksum(artifact: Path) -> None:
    import hashlib

    (artifact / MODEL_FILE).write_bytes(b"\x08\x07garbage that is not a protobuf graph")
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    manifest["sha256"] = hashlib.sha256((artifact / MODEL_FILE).read_bytes()).hexdigest()
    (artifact / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not_an_artifact", "no manifest"),
        ("truncated_model", "does not match the manifest"),
        ("unloadable_model", "cannot load"),
        ("empty_calibration", "found 0 calibration and 0 check clips"),
        ("only_undecodable_clips", "no decodable audio clips"),
        ("low_agreement", "agreement is below the threshold 99.00%"),
        ("already_int8", "already int8"),
    ],
)
def test_cli_refuses_with_exit_2_a_clear_message_and_nothing_written(
    case: str,
    message: str,
    fp32: Path,
    clips: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "source"
    calibration = clips
    if case == "not_an_artifact":
        source.mkdir()
        (source / MODEL_FILE).write_bytes((fp32 / MODEL_FILE).read_bytes())
    elif case == "low_agreement":
        make_band_artifact(source, offset=1000.0)  # activations far from 0: uint8 loses the bands
    elif case == "already_int8":
        quantize_artifact(fp32, source, calibration=clips)
    else:
        shutil.copytree(fp32, source)
    if case == "truncated_model":
        _corrupt_bytes(source)
    elif case == "unloadable_model":
        _corrupt_graph_with_matching_checksum(source)
    elif case == "empty_calibration":
        calibration = tmp_path / "empty"
        calibration.mkdir()
        (calibration / "notes.txt").write_text("no audio here")
    elif case == "only_undecodable_clips":
        calibration = tmp_path / "broken"
        for k in range(4):
            (calibration / f"c{k}").mkdir(parents=True)
            (calibration / f"c{k}" / "x.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "out"
    code, stdout, stderr = _cli(
        capsys, str(source), "--out", str(out), "--calibration", str(calibration)
    )
    assert code == 2
    assert stderr.startswith("error: ") and message in stderr, stderr
    assert stdout == ""
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left


def test_a_labelled_top1_drop_is_refused_even_when_agreement_is_allowed(
    clips: Path, tmp_path: Path
) -> None:
    source = tmp_path / "fragile"
    make_band_artifact(source, offset=1000.0)
    with pytest.raises(QuantizeError, match=r"top-1 fp32 100\.00%, int8 .*drops by more than"):
        quantize_artifact(source, tmp_path / "out", calibration=clips, min_agreement=0.0)
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_what_is_not_an_artifact_or_the_source(
    fp32: Path, clips: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(QuantizeError, match="not an artifact directory"):
        quantize_artifact(fp32, precious, calibration=clips)
    assert (precious / "thesis.tex").read_text() == "years of work"
    with pytest.raises(QuantizeError, match="is the source artifact"):
        quantize_artifact(fp32, fp32, calibration=clips, overwrite=True)
    assert read_manifest(fp32).precision == "fp32"


def test_quantisation_and_backends_do_not_import_torch() -> None:
    from tests.fresh_imports import heavy_imports

    code = (
        "import arinext.model.quantize, arinext.model.backends, arinext.model.bench, "
        "arinext.model.runtime_cli"
    )
    assert heavy_imports(code, ("torch",)) == []


def test_what_each_scheme_keeps_fp32_in_a_network(fp32: Path) -> None:
    network = Path(__file__).resolve().parents[2] / "artifacts" / "speech-commands-b0"
    ends = float_ends(network / MODEL_FILE)
    assert ends == [
        "/model/stem/fused/Conv",  # reads the log-mel
        "/model/speech_commands/Gemm",  # writes the logits
    ]
    kept = float_mixing_paths(network / MODEL_FILE)
    assert kept[0] == ends[0] and kept[-1] == ends[1]
    # Each of the 16 blocks: the 1x1 conv feeding its mixers, then the time and frequency mixers.
    body = [name.split("/")[-3] for name in kept[1:-1]]
    assert body == ["conv_in", "time_mixer", "freq_mixer"] * 16
    for rule in (float_ends, float_mixing_paths):
        assert rule(fp32 / MODEL_FILE) == []  # one convolution: a probe graph, all int8


def test_the_next_scheme_is_tried_when_one_fails_the_guard(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from arinext.model import quantize

    network = Path(__file__).resolve().parents[2] / "artifacts" / "speech-commands-b0"
    real = quantize.agreement
    tried = []

    def first_fails(*args: object, **kwargs: object) -> Agreement:
        found = real(*args, **kwargs)  # type: ignore[arg-type]
        tried.append(found)
        return replace(found, top1_agreement=0.5) if len(tried) == 1 else found

    small = {"calibration": clips, "calibration_clips": 8, "check_clips": 8, "min_agreement": 0.6}
    monkeypatch.setattr(quantize, "agreement", first_fails)
    manifest = quantize_artifact(network, tmp_path / "int8", **small)  # type: ignore[arg-type]
    assert len(tried) == 2
    assert manifest.quantization is not None
    assert manifest.quantization.method.endswith(SCHEMES[1].kept_fp32)
    # The refused scheme's figures stay in the record, beside the written one's.
    (refused,) = manifest.quantization.refused
    assert refused.method.endswith(SCHEMES[0].kept_fp32)
    assert refused.top1_agreement == 0.5 and "below the threshold 60.00%" in refused.reason
    # Every scheme refused: nothing written, and the message gives each one's figures.
    monkeypatch.setattr(
        quantize, "agreement", lambda *a, **k: replace(real(*a, **k), top1_agreement=0.5)
    )
    with pytest.raises(
        QuantizeError, match=r"stem and the classifier heads kept fp32.*band mixers"
    ):
        quantize_artifact(network, tmp_path / "refused", **small)  # type: ignore[arg-type]
    assert not (tmp_path / "refused").exists()


def test_the_fp32_operating_point_is_not_carried_into_int8(
    fp32: Path, clips: Path, tmp_path: Path
) -> None:
    """A tuned detection setting was measured on the fp32 graph: int8 is tuned on its own."""
    source = tmp_path / "tuned"
    shutil.copytree(fp32, source)
    manifest = read_manifest(source)
    manifest.detection = DetectionSettings(threshold=0.6, votes=2, tuned_on="fp32 scenes")
    write_manifest(source, manifest)
    quantized = quantize_artifact(source, tmp_path / "int8", calibration=clips)
    assert quantized.detection is None and read_manifest(source).detection is not None
