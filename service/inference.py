"""The model service's lifecycle: loading the artifacts, one batcher per model, the preparation
threads, readiness, draining and stopping.

Loading and the registry are :mod:`arinext.service.loading`; batching and admission are
:mod:`arinext.service.batching`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from arinext.model.backends import cpu_threads
from arinext.model.manifest import ArtifactError
from arinext.service.batching import Batcher, shutting_down
from arinext.service.errors import ApiError, model_gone
from arinext.service.loading import LoadedModel, ModelRegistry, load_models
from arinext.service.metrics import Metrics
from arinext.service.settings import Settings
from arinext.service.workers import SharedWorker, worker_pool

__all__ = ["ModelService"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Bound on waiting for the requests an unloaded or replaced model admitted (as at shutdown).
_RETIRE_TIMEOUT_SECONDS = 30.0


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
        self._loading_configured = False  # start() installs its own registry when done
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
        # Batchers of unloaded or replaced models, finishing what they admitted.
        self._retiring: set[asyncio.Task[None]] = set()

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
        self._loading_configured = True
        try:
            registry = await asyncio.to_thread(
                load_models,
                directories,
                **settings.runtime_options(),
            )
        except ArtifactError as exc:
            self.status = "failed"
            logger.error("refusing to serve: %s; the server stays not-ready", exc)
            return
        finally:
            self._loading_configured = False
        if self.shared_worker is not None:
            logger.info("one CPU: the preparation thread runs the batches too")
        self._install(
            registry, {m.name: self._batcher(m, settings) for m in registry.models.values()}
        )
        if threading.current_thread() is threading.main_thread():
            _freeze_startup_objects()
        self._set_ready()
        logger.info("ready: serving heads %s", ", ".join(registry.heads))

    def _set_ready(self) -> None:
        self.status = "ready"
        self.metrics.ready.set(0 if self.draining else 1)

    def _batcher(self, model: LoadedModel, settings: Settings) -> Batcher:
        """A started batcher for ``model`` (not yet serving: see :meth:`_install`)."""
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
        return batcher

    def _install(self, registry: ModelRegistry, batchers: dict[str, Batcher]) -> None:
        """Serve ``registry`` from now on, in one step of the event loop (no ``await``): a
        request resolves its heads and admits itself in one step too, so it sees either the old
        models or the new ones, never a mix."""
        info = self.metrics.model_info
        for model in self.registry.models.values():
            for head in model.manifest.heads:
                info.remove(model.name, head.name, model.manifest.sha256)
        self.registry = registry
        self.batchers = batchers
        for model in registry.models.values():
            for head in model.manifest.heads:
                info.labels(model=model.name, head=head.name, sha256=model.manifest.sha256).set(1)

    def batcher_for(self, model: LoadedModel) -> Batcher:
        """The batcher serving this very ``model``; refused when it was unloaded (404) or
        replaced by another artifact of its name (503: a retry reaches the new one) after the
        request resolved it."""
        batcher = self.batchers.get(model.name)
        if batcher is not None and batcher.model is model:
            return batcher
        raise model_gone(model.name, replaced=batcher is not None)

    def put(self, model: LoadedModel, settings: Settings) -> None:
        """Serve ``model``, in place of the served model of its name if there is one (whose
        admitted requests finish on it); ``ArtifactError`` when its heads clash with another
        model's. A server that had no model becomes ready. Refused while the configured models
        load: their registry, installed next, would drop this one without stopping its batcher."""
        if self._loading_configured:
            raise ArtifactError("the configured models are still loading; try again shortly")
        others = [m for m in self.registry.models.values() if m.name != model.name]
        registry = ModelRegistry([*others, model])  # checks the head names
        old = self.batchers.get(model.name)
        batchers = {name: b for name, b in self.batchers.items() if name != model.name}
        batchers[model.name] = self._batcher(model, settings)
        self._install(registry, batchers)
        if old is not None:
            self._retire(old, functools.partial(model_gone, model.name, replaced=True))
        if self.status != "ready":
            self._set_ready()

    def remove(self, name: str) -> None:
        """Stop serving the model ``name`` (a ``KeyError`` if none); requests it admitted
        finish, later ones are refused 404."""
        old = self.batchers[name]
        registry = ModelRegistry([m for m in self.registry.models.values() if m.name != name])
        self._install(registry, {n: b for n, b in self.batchers.items() if n != name})
        self._retire(old, functools.partial(model_gone, name, replaced=False))

    def _retire(self, batcher: Batcher, refusal: Callable[[], ApiError]) -> None:
        """Refuse new work on ``batcher`` now, and close it in the background once its admitted
        work is done (bounded)."""
        batcher.stop_admitting(refusal)

        async def close() -> None:
            await batcher.close(_RETIRE_TIMEOUT_SECONDS, refusal)
            current = self.batchers.get(batcher.model.name)
            if current is None:
                self.metrics.queue_depth.remove(batcher.model.name)
            else:  # replaced: the gauge is the new batcher's again
                current.update_depth()
            logger.info("retired a batcher of %s", batcher.model.name)

        task = asyncio.create_task(close(), name=f"retire-{batcher.model.name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

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
        await asyncio.gather(*(b.close(timeout) for b in self.batchers.values()), *self._retiring)
        self._stopped = True
        self.workers.shutdown(wait=False, cancel_futures=True)
