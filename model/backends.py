"""Inference backends: the one place where a session over an ONNX graph is built.

ONNX Runtime is the default and the reference. OpenVINO (the optional ``openvino`` extra) reads
the same ``model.onnx``; on CPUs with bfloat16 units its default precision hint runs the graph in
bf16, faster than fp32 where measured but with rounded logits, so the hint is a setting
(``auto``: the runtime's own choice; ``f32``: exact; ``bf16``: fast). Int8 artifacts are QDQ
graphs both runtimes execute as int8. GPUs stay reachable through ONNX Runtime providers.

Everything that runs a graph (the service, export verification, quantisation, evaluation of an
artifact, ``arinext bench``) asks :func:`open_session`, so thread settings, provider checks and
error messages are the same everywhere. This module imports no torch; OpenVINO is imported only
when it is asked for.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np

__all__ = [
    "BACKENDS",
    "PRECISION_HINTS",
    "Backend",
    "BackendError",
    "PrecisionHint",
    "Session",
    "available_backends",
    "cpu_threads",
    "open_session",
    "physical_cores",
]

Backend = Literal["onnxruntime", "openvino"]
PrecisionHint = Literal["auto", "f32", "bf16"]
BACKENDS: tuple[str, ...] = get_args(Backend)
PRECISION_HINTS: tuple[str, ...] = get_args(PrecisionHint)
CPU_PROVIDER = "CPUExecutionProvider"
# ONNX Runtime graph rewrites left off. QDQ propagation moves an int8 graph's quantisation up
# through max pooling, so the stem's pool runs on uint8 in ONNX Runtime's plain NCHW kernel
# instead of in fp32 in its blocked layout (what that costs: docs/performance.md, "Int8"). Without
# the move the answers are the same; fp32 graphs have nothing it applies to.
ORT_DISABLED_OPTIMIZERS: tuple[str, ...] = ("QDQPropagationTransformer",)


class BackendError(RuntimeError):
    """A backend that is not installed, a setting it does not support, or a graph it cannot load."""


class Session(Protocol):
    """A loaded graph, run with numpy arrays; ``run`` is safe to call from several threads."""

    backend: str
    description: str
    input_names: list[str]
    output_names: list[str]
    input_shapes: dict[str, list[int | None]]  # None: a dynamic dimension

    def run(self, outputs: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The named outputs, in the order asked, for one feed of named inputs."""
        ...


def available_backends() -> list[str]:
    """The backends importable in this environment (ONNX Runtime first)."""
    import importlib.util

    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


class _OrtSession:
    """ONNX Runtime's ``InferenceSession`` (its ``run`` is thread-safe)."""

    backend = "onnxruntime"

    def __init__(
        self, model: Path | bytes, threads: int, providers: Sequence[str], precision: str
    ) -> None:
        import onnxruntime as ort

        if precision == "bf16":
            raise BackendError(
                "ONNX Runtime runs fp32 graphs in fp32 on the CPU; precision bf16 needs the "
                "openvino backend (or an int8 artifact from `arinext quantize`)"
            )
        available = ort.get_available_providers()
        unavailable = [p for p in providers if p not in available]
        if unavailable:
            raise BackendError(
                f"execution providers {unavailable} are not in this ONNX Runtime build "
                f"(available: {available})"
            )
        options = ort.SessionOptions()
        # 0 is not left to ONNX Runtime: its default counts the machine's physical cores and pins
        # one thread to each, so a process confined by taskset or a cpuset would run threads on
        # CPUs it was not given (or, where the pinning fails, more threads than its CPUs). The
        # same count within the mask, unpinned, is what it means.
        threads = threads or physical_cores()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        try:
            self._session = ort.InferenceSession(
                source,
                options,
                providers=list(providers),
                disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
            )
        except Exception as exc:  # ORT raises its own exception types for unloadable graphs
            raise BackendError(f"ONNX Runtime cannot load the model: {exc}") from exc
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.input_shapes = {
            i.name: [d if isinstance(d, int) else None for d in i.shape]
            for i in self._session.get_inputs()
        }
        self.output_names = [o.name for o in self._session.get_outputs()]
        used = ", ".join(self._session.get_providers())
        self.description = f"onnxruntime {ort.__version__} ({used}, {threads} threads)"

    def run(self, outputs: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(list(outputs), dict(feed))


class _OpenVinoSession:
    """An OpenVINO compiled model on the CPU with one infer request, latency-tuned.

    One request serves one call at a time (a lock guards it), which is how the service uses a
    model: one batch at a time on the model's own thread. Outputs are copied because the request
    reuses its output buffers on the next call.
    """

    backend = "openvino"

    def __init__(self, model: Path | bytes, threads: int, precision: str) -> None:
        try:
            import openvino as ov
            import openvino.properties as props
            import openvino.properties.hint as hints
        except ImportError as exc:
            raise BackendError(
                "the openvino backend needs the OpenVINO runtime: pip install 'arinext[openvino]'"
            ) from exc
        core = ov.Core()
        if precision == "bf16":
            capabilities = core.get_property("CPU", props.device.capabilities)
            if "BF16" not in capabilities:
                raise BackendError(
                    f"this CPU has no bfloat16 support (OpenVINO CPU capabilities: "
                    f"{', '.join(capabilities)}); use precision f32 or auto"
                )
        config: dict[object, object] = {hints.performance_mode: hints.PerformanceMode.LATENCY}
        if threads:
            config[props.inference_num_threads] = threads
        if precision != "auto":
            config[hints.inference_precision] = precision
        try:
            graph = core.read_model(model if isinstance(model, bytes) else str(model))
            self._compiled = core.compile_model(graph, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise BackendError(f"OpenVINO cannot load the model: {exc}") from exc
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self.input_names = [i.get_any_name() for i in self._compiled.inputs]
        self.input_shapes = {
            i.get_any_name(): [d.get_length() if d.is_static else None for d in i.partial_shape]
            for i in self._compiled.inputs
        }
        self.output_names = [o.get_any_name() for o in self._compiled.outputs]
        chosen = self._compiled.get_property(hints.inference_precision).get_type_name()
        used = self._compiled.get_property(props.inference_num_threads)
        self.description = (
            f"openvino {ov.get_version().split('-')[0]} (CPU, {chosen}, {used} threads)"
        )

    def run(self, outputs: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        ports = [self._compiled.output(name) for name in outputs]
        with self._lock:
            results = self._request.infer(dict(feed))
            return [np.array(results[port], copy=True) for port in ports]


def open_session(
    model: Path | str | bytes,
    *,
    backend: str = "onnxruntime",
    precision: str = "auto",
    threads: int = 0,
    providers: Sequence[str] = (CPU_PROVIDER,),
) -> Session:
    """Load an ONNX graph (a path or its bytes) for inference; :class:`BackendError` says why not.

    ``threads`` is the number of intra-op threads (0: for ONNX Runtime, one per physical core
    among the CPUs this process may run on, :func:`physical_cores`; OpenVINO keeps its own
    default, which respects the affinity mask). ``providers`` are
    ONNX Runtime execution providers in order of preference; one the installed build lacks (e.g.
    CUDA without onnxruntime-gpu) is refused rather than silently replaced by the CPU; so are
    providers other than the CPU's with the OpenVINO backend, which runs on the CPU.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if precision not in PRECISION_HINTS:
        choices = ", ".join(PRECISION_HINTS)
        raise BackendError(f"unknown precision {precision!r}; choose from {choices}")
    if threads < 0:
        raise BackendError(f"threads must be >= 0, got {threads}")
    source = model if isinstance(model, bytes) else Path(model)
    if isinstance(source, Path) and not source.is_file():
        raise BackendError(f"{source}: no such model file")
    if backend == "openvino":
        if tuple(providers) != (CPU_PROVIDER,):
            raise BackendError(
                f"execution providers {list(providers)} are ONNX Runtime's; the openvino backend "
                f"runs on the CPU (leave providers at {CPU_PROVIDER}, or use onnxruntime)"
            )
        return _OpenVinoSession(source, threads, precision)
    return _OrtSession(source, threads, providers, precision)


def physical_cores(sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """Physical cores among the CPUs this process may run on: hyperthreads of one core count
    once, as in ONNX Runtime's own default (which ignores the affinity mask). Where the topology
    cannot be read, every allowed CPU counts."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text(encoding="ascii").strip()
            core = (topology / "core_id").read_text(encoding="ascii").strip()
        except OSError:
            return len(allowed)
        cores.add((package, core))
    return len(cores)


def cpu_threads() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
