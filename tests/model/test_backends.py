"""``arinext.model.backends``: one way to open a graph on ONNX Runtime or OpenVINO, with clear
refusals."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from arinext.model.backends import (
    BackendError,
    available_backends,
    cpu_threads,
    open_session,
    physical_cores,
)
from arinext.model.bench import random_input
from arinext.model.manifest import MODEL_FILE
from arinext.model.quantize import quantize_artifact
from tests.model.band_artifact import CFG, make_band_artifact

OUTPUT = "logits_bands"
needs_openvino = pytest.mark.skipif(
    "openvino" not in available_backends(), reason="the openvino extra is not installed"
)


@pytest.fixture(scope="module")
def band(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("band") / "fp32"
    make_band_artifact(directory)
    return directory


@pytest.fixture(scope="module")
def band_int8(band: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("band") / "int8"
    quantize_artifact(band, out, calibration_clips=24, check_clips=24, min_agreement=0.0)
    return out


def _views(batch: int = 5) -> np.ndarray:
    return random_input(batch, (1, CFG.num_frames, CFG.n_mels), seed=3)


def _logits(model: Path, **kwargs: object) -> np.ndarray:
    session = open_session(model / MODEL_FILE, threads=1, **kwargs)
    return session.run([OUTPUT], {"logmel": _views()})[0]


def test_onnx_runtime_session_describes_the_graph_and_takes_bytes_too(band: Path) -> None:
    session = open_session(band / MODEL_FILE, threads=1)
    assert session.backend == "onnxruntime"
    assert (session.input_names, session.output_names) == (["logmel"], [OUTPUT])
    assert session.input_shapes["logmel"] == [None, 1, None, 128]
    assert "CPUExecutionProvider" in session.description
    from_bytes = open_session((band / MODEL_FILE).read_bytes())
    feed = {"logmel": _views()}
    np.testing.assert_array_equal(session.run([OUTPUT], feed)[0], from_bytes.run([OUTPUT], feed)[0])


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux affinity masks and two CPUs",
)
def test_default_threads_stay_on_the_cpus_the_process_was_given(band: Path) -> None:
    """ONNX Runtime's own default pins a thread to every physical core of the machine, so under
    ``taskset -c 0`` a session escaped to the other cores; 0 now means one thread per physical
    core within the mask, left unpinned. (Confined to one CPU, the fixed session starts no pool
    thread at all, so its thread count, in the description, carries as much of the test as the
    masks do; the old code fails on the masks.)"""
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    os.sched_setaffinity(0, {cpu})  # this thread; threads it starts inherit the mask
    try:
        session = open_session(band / MODEL_FILE, threads=0)
        session.run([OUTPUT], {"logmel": _views()})
    finally:
        os.sched_setaffinity(0, allowed)
    masks = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            masks[task.name] = os.sched_getaffinity(int(task.name))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    # Threads started before keep the whole mask; the session's may only have the one CPU.
    escaped = {tid: mask for tid, mask in masks.items() if mask != allowed and mask != {cpu}}
    assert not escaped, f"threads pinned outside the mask the session was opened under: {escaped}"
    assert "1 threads" in session.description


def _topology(root: Path, cpu: int, package: int, core: int) -> None:
    directory = root / f"cpu{cpu}" / "topology"
    directory.mkdir(parents=True)
    (directory / "physical_package_id").write_text(f"{package}\n")
    (directory / "core_id").write_text(f"{core}\n")


def test_physical_cores_count_hyperthreads_of_a_core_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    for cpu, (package, core) in enumerate([(0, 0), (0, 0), (0, 1), (0, 1), (1, 0)]):
        _topology(tmp_path, cpu, package, core)
    assert physical_cores(tmp_path) == 3  # two cores of two threads, and one of another package
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2}, raising=False)
    assert physical_cores(tmp_path) == 2  # only the CPUs of the mask count
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 7}, raising=False)
    assert physical_cores(tmp_path) == 2  # no topology for CPU 7: every allowed CPU counts


def test_physical_cores_of_this_machine_are_within_its_cpus() -> None:
    assert 1 <= physical_cores() <= cpu_threads()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"precision": "bf16"}, "precision bf16 needs the openvino backend"),
        ({"providers": ["CUDAExecutionProvider"]}, "not in this ONNX Runtime build"),
        ({"threads": -1}, "threads must be >= 0"),
    ],
)
def test_unsupported_settings_are_refused_with_a_reason(
    band: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(BackendError, match=message):
        open_session(band / MODEL_FILE, **kwargs)


def test_a_graph_that_cannot_load_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no such model file"):
        open_session(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07not a graph")
    with pytest.raises(BackendError, match="ONNX Runtime cannot load the model"):
        open_session(tmp_path / "bad.onnx")


def test_openvino_missing_says_which_extra_to_install(
    band: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    with pytest.raises(BackendError, match=r"pip install 'arinext\[openvino\]'"):
        open_session(band / MODEL_FILE, backend="openvino")


@needs_openvino
def test_openvino_refuses_onnx_runtime_providers(band: Path) -> None:
    with pytest.raises(BackendError, match="are ONNX Runtime's; the openvino backend runs on"):
        open_session(band / MODEL_FILE, backend="openvino", providers=["CUDAExecutionProvider"])


@needs_openvino
def test_openvino_f32_computes_what_onnx_runtime_does(band: Path) -> None:
    session = open_session(band / MODEL_FILE, backend="openvino", precision="f32", threads=1)
    assert session.backend == "openvino" and "f32" in session.description
    assert session.input_shapes["logmel"] == [None, 1, None, 128]
    reference = _logits(band)
    np.testing.assert_allclose(
        _logits(band, backend="openvino", precision="f32"), reference, rtol=1e-4, atol=1e-3
    )


@needs_openvino
def test_openvino_bf16_stays_within_bfloat16_rounding(band: Path) -> None:
    try:
        got = _logits(band, backend="openvino", precision="bf16")
    except BackendError as exc:
        pytest.skip(str(exc))  # a CPU without bfloat16 support: refused, as tested above
    reference = _logits(band)
    # bfloat16 keeps 8 significant bits: a relative error of 2**-8 per rounding, a few roundings.
    np.testing.assert_allclose(got, reference, rtol=2e-2, atol=2e-2 * np.abs(reference).max())
    assert not np.array_equal(got, reference)  # it did run in bf16, not silently in f32


@needs_openvino
def test_openvino_runs_the_int8_graph_like_onnx_runtime(band_int8: Path) -> None:
    reference = _logits(band_int8)
    got = _logits(band_int8, backend="openvino")
    np.testing.assert_allclose(got, reference, atol=0.05 * np.abs(reference).max())
    assert (got.argmax(axis=1) == reference.argmax(axis=1)).all()


@needs_openvino
def test_openvino_session_is_safe_to_share_between_threads(band: Path) -> None:
    session = open_session(band / MODEL_FILE, backend="openvino", precision="f32", threads=1)
    inputs = [_views(batch) for batch in (1, 2, 3, 4)]
    expected = [session.run([OUTPUT], {"logmel": x})[0] for x in inputs]
    results: dict[int, list[np.ndarray]] = {}

    def worker(i: int) -> None:
        results[i] = [session.run([OUTPUT], {"logmel": inputs[i]})[0] for _ in range(20)]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, runs in results.items():
        for got in runs:
            np.testing.assert_array_equal(got, expected[i])


def test_an_int8_networks_pool_stays_fp32_and_its_answers_do_not_change(tmp_path: Path) -> None:
    """ONNX Runtime's QDQ propagation would move the served int8 model's quantisation above its
    stem pool (a uint8 pool in a slow kernel); with it left off the pool reads the fp32 stem and
    every logit is the same."""
    import onnx
    import onnxruntime as ort

    from arinext.model.backends import ORT_DISABLED_OPTIMIZERS
    from arinext.service.settings import EMBEDDED_MODEL_DIR

    model = str(EMBEDDED_MODEL_DIR / MODEL_FILE)

    def pool_input(disabled: list[str]) -> str:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        options.log_severity_level = 3  # not its warning that the file is for this CPU only
        ort.InferenceSession(model, options, disabled_optimizers=disabled)
        graph = onnx.load(tmp_path / "optimized.onnx").graph
        made_by = {out: node.op_type for node in graph.node for out in node.output}
        pools = [node for node in graph.node if node.op_type == "MaxPool"]
        assert len(pools) == 1
        return made_by[pools[0].input[0]]

    assert pool_input([]) == "QuantizeLinear"  # what ONNX Runtime would do on its own
    assert pool_input(list(ORT_DISABLED_OPTIMIZERS)) == "Conv"  # the fp32 stem, as served
    views = random_input(7, (1, 50, 128), seed=5)
    plain = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    expected = plain.run(None, {"logmel": views})[0]
    served = open_session(model, threads=1)
    assert np.array_equal(served.run(served.output_names, {"logmel": views})[0], expected)
