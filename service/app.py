"""The FastAPI application factory.

``create_app`` wires settings, metrics, routers, middleware and (optionally) the demo; nothing
heavy happens until the lifespan starts, which loads, verifies and warms up the models in the
background so ``/healthz`` answers at once and ``/readyz`` turns 200 when they are ready.

Run with ``uvicorn --factory arinext.service.app:create_app`` or ``arinext serve``. The module
attribute ``app`` (for ``uvicorn arinext.service.app:app``) is built on first access, so importing
this module has no side effects and does not read the environment.

Graceful shutdown: on SIGTERM the server first drains, answering ``/readyz`` with 503 for
``drain_seconds`` while still serving, so load balancers stop sending traffic; then it closes the
open streams (``error`` event ``shutting_down``, close 1001), uvicorn stops accepting connections
and waits for in-flight requests, and the lifespan stops the batchers. ``arinext serve`` then
exits 0 (see :mod:`arinext.service.cli`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from arinext.model.manifest import arinext_version
from arinext.service.http_errors import install_error_handlers
from arinext.service.inference import ModelService
from arinext.service.memory import IDLE_TRIM_SECONDS, trim_when_idle
from arinext.service.metrics import Metrics
from arinext.service.middleware import (
    AdmissionMiddleware,
    BodyLimitMiddleware,
    RelativeRedirects,
    RequestMetricsMiddleware,
)
from arinext.service.repository import ModelRepository
from arinext.service.routers import classify, health, models, repository, stream, v2
from arinext.service.routers.docs import install_docs
from arinext.service.settings import Settings
from arinext.service.streams.session import StreamHub
from arinext.service.teach import Teacher
from arinext.service.workers import batch_scheduling

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

# Bound on waiting for admitted windows at shutdown; uvicorn has already let requests finish.
_STOP_TIMEOUT_SECONDS = 30.0
# Bound on waiting for the streams' close frames on SIGTERM (a client that reads nothing).
_STREAMS_CLOSE_SECONDS = 5.0


def _install_drain_handler(
    service: ModelService, streams: StreamHub, drain_seconds: float
) -> Callable[[], None]:
    """Delay the server's own SIGTERM handling by ``drain_seconds`` of not-ready, then close the
    open streams the documented way, then let uvicorn stop; returns undo.

    Installed after uvicorn's handler (which only sets a flag), so this works under plain
    ``uvicorn`` as well as ``arinext serve``. A second SIGTERM stops at once. Signals can only be
    handled in the main thread, so in-process test clients get no handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    closing: set[asyncio.Task[None]] = set()

    def forward(frame: FrameType | None = None) -> None:
        if callable(previous):
            previous(signal.SIGTERM, frame)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    def closed(task: asyncio.Task[None]) -> None:
        closing.discard(task)
        forward()

    def stop() -> None:
        # uvicorn's shutdown would drop the streams with 1012 and no word: they go first.
        task = loop.create_task(streams.close_all(_STREAMS_CLOSE_SECONDS), name="close-streams")
        closing.add(task)
        task.add_done_callback(closed)

    def begin_stopping() -> None:
        service.set_draining()
        if drain_seconds <= 0:
            stop()
            return
        logger.info("SIGTERM: draining for %.1f s (readyz 503) before shutting down", drain_seconds)
        loop.call_later(drain_seconds, stop)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if service.draining:
            forward(frame)
        else:
            loop.call_soon_threadsafe(begin_stopping)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    service: ModelService = app.state.models
    # Requests run side by side; BLAS threads inside one window's small matrix product only
    # contend with them (OpenBLAS spins: ~30x the CPU per log-mel on two busy cores).
    blas = threadpool_limits(limits=1, user_api="blas")
    # First, so the threads started from here on (workers, the model's) inherit the policy.
    undo_batch_scheduling = batch_scheduling() if settings.batch_scheduling else None
    if undo_batch_scheduling is not None:
        logger.info("threads scheduled as SCHED_BATCH")
    loading = asyncio.create_task(service.start(settings), name="load-models")
    trimming = asyncio.create_task(
        trim_when_idle(service.runs, service.busy, IDLE_TRIM_SECONDS), name="trim-memory"
    )
    undo_drain_handler = _install_drain_handler(service, app.state.streams, settings.drain_seconds)
    try:
        yield
    finally:
        undo_drain_handler()
        loading.cancel()
        trimming.cancel()
        await asyncio.gather(loading, trimming, return_exceptions=True)
        if app.state.teacher is not None:  # first: a run ending now would serve its model
            await app.state.teacher.close()
        await service.stop(_STOP_TIMEOUT_SECONDS)
        if app.state.repository is not None:
            app.state.repository.close()
        blas.restore_original_limits()
        if undo_batch_scheduling is not None:
            undo_batch_scheduling()
        logger.info("stopped")


def _configure_logging(level: str) -> None:
    """Make the service's log lines visible under plain ``uvicorn`` too.

    uvicorn configures only its own loggers; when nothing has configured the root logger (as
    ``arinext`` or a test runner would), give it a stderr handler rather than lose the lines
    that say why the server is not ready.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("arinext.service").setLevel(level.upper())


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; ``settings`` default to the ``ARINEXT_*`` environment."""
    settings = settings if settings is not None else Settings()
    _configure_logging(settings.log_level)
    metrics = Metrics()
    app = FastAPI(
        title="arinext",
        summary="AudioRepInceptionNeXt audio classification",
        description="Upload a clip to `POST /classify`; `GET /models` lists the heads.",
        version=arinext_version() or "unknown (not installed)",
        docs_url=None,  # install_docs serves Swagger UI from local assets instead of a CDN
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.models = ModelService(
        metrics,
        retry_after=settings.retry_after_seconds,
        worker_threads=settings.worker_threads,
        worker_niceness=settings.worker_niceness,
    )
    app.state.streams = StreamHub(settings, metrics)
    install_error_handlers(app)
    classify.add_route(app)
    routers = [models.router, health.router, stream.router, v2.router]
    # Off unless configured: then the routes do not exist, so they are neither answered nor
    # listed in the OpenAPI document.
    app.state.repository = None
    if settings.model_repository is not None:
        app.state.repository = ModelRepository(settings, app.state.models)
        routers.append(repository.router)
    for router in routers:
        app.include_router(router)
    has_gradio = importlib.util.find_spec("gradio") is not None
    demo = settings.demo if settings.demo is not None else has_gradio
    app.state.teacher = None
    if settings.demo_teach:
        if not demo:
            raise RuntimeError(
                "ARINEXT_DEMO_TEACH=true is a tab of the demo: set ARINEXT_DEMO=true"
            )
        app.state.teacher = Teacher(settings, app.state.models)
    if demo:
        if not has_gradio:
            raise RuntimeError(
                "ARINEXT_DEMO=true needs Gradio, which the API-only install leaves out: "
                "pip install 'arinext[serve,demo]', or set ARINEXT_DEMO=false"
            )
        from arinext.service.demo import mount_demo  # Gradio is heavy; only import it when used

        mount_demo(app, app.state.models, settings, app.state.teacher)
    install_docs(app, home="/demo/" if demo else "/docs")
    app.add_middleware(RelativeRedirects)
    # Added last = outermost: metrics see every answer, including the body limit's 413 and the
    # early 503s of admission.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes,
        metrics=metrics,
        body_timeout=settings.body_timeout_seconds,
        discard_bytes=settings.discard_bytes,
    )
    app.add_middleware(
        AdmissionMiddleware,
        refusal=app.state.models.refusal,
        metrics=metrics,
        retry_after=settings.retry_after_seconds,
    )
    api_routes = [route for router in routers for route in router.routes]
    app.add_middleware(
        RequestMetricsMiddleware, metrics=metrics, routes=lambda: [*api_routes, *app.routes]
    )
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
