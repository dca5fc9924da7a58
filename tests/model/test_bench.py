"""``arinext bench``: ms per clip and clips/s of an artifact or any ONNX file, text or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from arinext.cli import main
from arinext.model.backends import available_backends
from arinext.model.bench import Timing, time_interleaved
from arinext.model.manifest import MODEL_FILE
from tests.model.band_artifact import make_band_artifact


@pytest.fixture(scope="module")
def band(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bench") / "band"
    make_band_artifact(directory)
    return directory


def _bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["bench", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_timing_summarises_runs_per_clip() -> None:
    timing = Timing.of(np.array([0.010, 0.020, 0.030, 0.040]), batch=4)
    assert (timing.median_ms, timing.min_ms, timing.max_ms) == pytest.approx((25, 10, 40))
    assert timing.ms_per_clip == pytest.approx(6.25)
    assert timing.clips_per_second == pytest.approx(160)


def test_interleaved_calls_take_turns() -> None:
    order: list[str] = []
    timings = time_interleaved(
        [lambda: order.append("a"), lambda: order.append("b")], runs=3, warmup=1, batch=1
    )
    assert order == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert [t.runs for t in timings] == [3, 3]


def test_bench_an_artifact_as_json(band: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _bench(capsys, str(band), "--batch", "3", "--runs", "4", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["input_shape"] == [3, 1, 100, 128]  # from the manifest's front-end
    assert report["backend"] == "onnxruntime" and report["runs"] == 4
    assert report["median_ms"] > 0 and report["clips_per_second"] > 0
    assert report["ms_per_clip"] == pytest.approx(report["median_ms"] / 3)


def test_bench_prints_a_readable_summary(band: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _bench(capsys, str(band / MODEL_FILE), "--runs", "3")
    assert code == 0
    assert "per clip:" in out and "clips/s" in out and "onnxruntime" in out


def test_a_bare_onnx_file_with_dynamic_dims_needs_a_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, "t"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, "t"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "relu.onnx")
    code, _, err = _bench(capsys, str(tmp_path / "relu.onnx"))
    assert code == 2 and "--shape" in err
    code, out, err = _bench(capsys, str(tmp_path / "relu.onnx"), "--shape", "2,16", "--json")
    assert code == 0, err
    assert json.loads(out)["input_shape"] == [1, 2, 16]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing-model"], "no such artifact or ONNX file"),
        (["BAND", "--providers", "NoSuchExecutionProvider"], "not in this ONNX Runtime build"),
        (["BAND", "--runs", "0"], "--batch and --runs must be >= 1"),
    ],
)
def test_bench_refuses_with_exit_2(
    band: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _bench(capsys, *[str(band) if a == "BAND" else a for a in argv])
    assert code == 2 and message in err and out == ""


@pytest.mark.skipif("openvino" not in available_backends(), reason="openvino not installed")
def test_bench_on_openvino(band: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _bench(
        capsys, str(band), "--backend", "openvino", "--precision", "f32", "--runs", "3", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["session"].startswith("openvino")
