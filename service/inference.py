"""The model service's lifecycle: loading the artifacts, one batcher per model, the preparation
threads, readiness, draining and stopping.

Loading and the registry are :mod:`arinext.service.loading`; batching and admission are
:mod:`arinext.service.batching`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from arinext.model.backends import cpu_threads
from arinext.model.manifest import ArtifactError
from arinext.service.batching import Batcher, shutting_down
from arinext.service.errors import ApiError
from arinext.service.loading import ModelRegistry, load_models
from arinext.service.metrics import Metrics
from arinext.service.settings import Settings
from arinext.service.workers import SharedWorker, worker_pool

__all__ = ["ModelService"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _freeze_startup_objects() -> None:
    """Move what exists now (modules, models, the app: it lives as long as the server) out of
    the cyclic garbage collector's way, so that a full collection no longer scans it.

    Under load a full collection stalls every request in flight while it scans them; frozen,
    they are no longer scanned (docs/performance.md). Only a server's main thread does this: apps
    run in-process (tests, through a portal thread) come and go, and what a freeze keeps is
    never collected.
    """
    gc.collect()  # not the garbage of loading and warm-up
    gc.freeze()
    logger.info("froze %d startup objects out of the cyclic collector", gc.get_freeze_count())


class ModelService:
    """The served models, their batchers and the readiness the probes report.

    ``status`` moves from ``loading`` to ``ready``, or to ``failed`` (an artifact did not verify)
    or ``no_models`` (nothing configured, nothing embedded); ``draining`` is set on SIGTERM.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        retry_after: int,
        worker_threads: int = 0,
        worker_niceness: int = 0,
    ) -> None:
        self.metrics = metrics
        self.retry_after = retry_after
        self.status = "loading"
        self.draining = False
        self.registry = ModelRegistry([])
        self.batchers: dict[str, Batcher] = {}
        # Decode, resample and log-mel of requests (arinext.service.workers explains the pool's size
        # and priority); on one CPU, its one thread runs the batches too (see Batcher).
        threads = worker_threads or cpu_threads()
        self.shared_worker = (
            SharedWorker("prepare", worker_niceness)
            if threads == 1 and cpu_threads() == 1
            else None
        )
        self.workers: Executor = self.shared_worker or worker_pool(
            "prepare", threads, worker_niceness
        )
        self.worker_niceness = worker_niceness
        self._stopped = False

    @property
    def ready(self) -> bool:
        """True when requests can be served and load balancers should send them."""
        return self.status == "ready" and not self.draining

    def ensure_serving(self) -> None:
        """Refuse (503) when no model can answer; a draining server still serves."""
        if self.status == "ready":
            return
        detail = "models are loading" if self.status == "loading" else "no model is served"
        raise ApiError(
            503,
            "not_ready",
            f"the server is not ready: {detail}",
            reason="not_ready",
            headers={"Retry-After": str(self.retry_after)},
        )

    def runs(self) -> int:
        """Model runs so far, over all models."""
        return sum(batcher.runs for batcher in self.batchers.values())

    def busy(self) -> bool:
        """Whether any model has admitted work in flight."""
        return any(batcher.admitted for batcher in self.batchers.values())

    def refusal(self) -> ApiError | None:
        """The 503 that any inference request arriving now would get (every model is over its
        admission bounds), or None; lets a request be refused before its body is read."""
        if self.status != "ready" or not self.batchers:
            return None  # the routes say why they cannot serve
        first: ApiError | None = None
        for batcher in self.batchers.values():
            if (error := batcher.refusal()) is None:
                return None  # one model would admit it: let the route decide
            first = first or error
        return first

    def set_draining(self) -> None:
        """Report not-ready from now on, while still serving what arrives."""
        self.draining = True
        self.metrics.ready.set(0)

    async def start(self, settings: Settings) -> None:
        """Verify, load and warm up the configured artifacts, then start their batchers."""
        directories = settings.model_dirs()
        if not directories:
            self.status = "no_models"
            logger.error(
                "no models configured (set ARINEXT_MODELS or serve --models DIR) and no "
                "embedded model at %s: the server stays not-ready",
                settings.default_model_dir,
            )
            return
        try:
            registry = await asyncio.to_thread(
                load_models,
                directories,
                intra_op_threads=settings.intra_op_threads,
                providers=settings.providers,
                backend=settings.backend,
                precision=settings.precision,
            )
        except ArtifactError as exc:
            self.status = "failed"
            logger.error("refusing to serve: %s; the server stays not-ready", exc)
            return
        self.registry = registry
        if self.shared_worker is not None:
            logger.info("one CPU: the preparation thread runs the batches too")
        for name, model in registry.models.items():
            batcher = Batcher(
                model,
                self.metrics,
                max_batch=settings.max_batch,
                max_wait_ms=settings.max_wait_ms,
                queue_size=settings.queue_size,
                max_queue_ms=settings.max_queue_ms,
                retry_after=self.retry_after,
                worker_niceness=self.worker_niceness,
                executor=self.shared_worker,
            )
            batcher.start()
            self.batchers[name] = batcher
            for head in model.manifest.heads:
                self.metrics.model_info.labels(
                    model=name, head=head.name, sha256=model.manifest.sha256
                ).set(1)
        if threading.current_thread() is threading.main_thread():
            _freeze_startup_objects()
        self.status = "ready"
        self.metrics.ready.set(0 if self.draining else 1)
        logger.info("ready: serving heads %s", ", ".join(registry.heads))

    async def prepare_on_workers(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the preparation threads (:attr:`workers`), for uploads and streams
        alike; once :meth:`stop` has released them, a new job, or one still queued then, is
        refused 503 ``shutting_down`` instead of surfacing the pool's own ``RuntimeError`` (a
        500) or cancellation."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.workers, fn, *args)
        except RuntimeError:
            if not self._stopped:
                raise
            raise shutting_down() from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._stopped or (task is not None and task.cancelling()):
                raise  # the caller itself was cancelled
            raise shutting_down() from None

    async def stop(self, timeout: float) -> None:
        """Finish admitted work (bounded by ``timeout``) and release the worker threads."""
        self.set_draining()
        await asyncio.gather(*(b.close(timeout) for b in self.batchers.values()))
        self._stopped = True
        self.workers.shutdown(wait=False, cancel_futures=True)
