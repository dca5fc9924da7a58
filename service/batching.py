"""Windows of concurrent requests batched per model, with admission bounded in count and time.

An idle model runs a request at once, and what arrives while a batch runs forms the next batch.
The run happens off the event loop: on the model's own thread, or, on a one-CPU server, on its
one preparation thread. Admission is decided before any decoding (:meth:`Batcher.admit`, the one
way in); long clips run as background chunks that cannot starve short requests.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from arinext.service.errors import ApiError
from arinext.service.loading import LoadedModel
from arinext.service.metrics import Metrics
from arinext.service.workers import SharedWorker, worker_pool

__all__ = ["Admission", "BatchResult", "Batcher", "shutting_down"]

logger = logging.getLogger(__name__)


def shutting_down() -> ApiError:
    """The refusal of work that arrives, or is still queued, while the service stops."""
    return ApiError(503, "shutting_down", "the server is shutting down")


# Shortest stretch of a backlog over which the drain rate is measured (see Batcher._drained).
_DRAIN_SPAN_SECONDS = 0.1


def _nothing() -> None:
    """A job that marks its place in a worker queue (all queued before it are done)."""


@dataclass
class BatchResult:
    """One submission's logits, how long it waited, and its share of its batch's run time.

    ``inference_seconds`` is the batch's run time times this submission's fraction of the batch's
    windows, so the shares of everyone in a batch add up to the batch's time, never more.
    """

    logits: dict[str, np.ndarray]
    queue_seconds: float
    inference_seconds: float


@dataclass
class _Job:
    views: np.ndarray
    future: asyncio.Future[BatchResult]
    bulk: bool
    enqueued: float = field(default_factory=time.perf_counter)
    deadline: float = math.inf  # refused (503) instead of run when its batch starts later
    hold: float = 0.0  # seconds it may wait for others to fill its batch
    company: float = math.inf  # once this many windows are queued, no more will come to join


class _Ewma:
    """An exponentially weighted mean (None until the first observation)."""

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.value: float | None = None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else self.value + self.weight * (x - self.value)


class Batcher:
    """Collects windows for one model and runs them in batches on a dedicated thread.

    Adaptive batching (as Triton's dynamic batcher with no queue delay): an idle model runs what
    is queued at once; while a batch runs, arrivals pile up and form the next one, up to
    ``max_batch`` windows. ``max_wait_ms`` > 0 additionally holds a batch that long to fill it,
    and a submission may ask for a hold of its own (a stream window, whose answer is due a hop
    later, not at once): a batch is held until it is full or until the earliest of its jobs'
    holds runs out. Fewer, fuller runs cost less CPU per window: each run pays for the weights
    coming back into the caches the work between runs evicted.

    Two classes of work keep long clips from starving short ones: a request's submission
    (``reserved=True``; all the windows of an ordinary clip) is *urgent*; a long clip (more
    windows than one batch) runs as *bulk* chunks of at most ``bulk_chunk`` (half a batch). Every
    batch takes at most one bulk chunk first, then urgent windows in arrival order, then more
    bulk if room is left: long clips always progress and short requests get at least half of
    every batch.

    Admission is checked on arrival, before decoding, by count and by time: ``reserve`` refuses
    (503) when ``queue_size`` urgent windows are already admitted, or when the admitted work's
    estimated time plus one batch's run exceeds ``max_queue_ms``. The estimate is windows x
    seconds per window: while a backlog lasts, the wall time per window in which it drains, which
    counts what costs cannot see (reading, parsing and refusing requests on the same cores, other
    processes) and what batching saves; otherwise what preparation and inference measured per
    window. An estimate can still be wrong, so the bound is also a deadline, as in Triton's
    queue policy (``max_queue_delay`` with ``REJECT``): an urgent submission whose batch would
    start more than ``max_queue_ms`` after its request arrived is answered 503 instead of late.
    Bulk chunks never refuse: they wait for room in their own pool of ``queue_size`` windows.

    Batches run on a thread of their own, or on ``executor`` when given: the single preparation
    thread of a one-CPU server (:class:`ModelService`). Two busy threads on one CPU take turns
    wherever the scheduler cuts them, and each turn evicts the other's caches; one thread that
    prepares requests and then runs their batch is the shape of the in-process loop. A batch
    then waits until that thread has finished the preparations queued before it, so it takes
    every request they produced, and once taken it runs before the preparations that arrived
    meanwhile (:meth:`SharedWorker.submit_first`): only the job already running (and batches of
    other models taken before it) can still delay it past the queue-time deadline, which is
    checked when the batch is taken.
    """

    def __init__(
        self,
        model: LoadedModel,
        metrics: Metrics,
        *,
        max_batch: int,
        max_wait_ms: float = 0.0,
        queue_size: int,
        max_queue_ms: float = 0.0,
        retry_after: int,
        worker_niceness: int = 0,
        executor: SharedWorker | None = None,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.capacity = queue_size
        self.max_queue = max_queue_ms / 1000
        self.retry_after = retry_after
        # Submissions never exceed what one batch or the whole queue can hold.
        self.chunk = min(max_batch, queue_size)
        self.bulk_chunk = max(1, self.chunk // 2)
        self._urgent: deque[_Job] = deque()
        self._bulk: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._admitted = 0
        self._bulk_admitted = 0
        self.runs = 0  # model runs so far
        self._infer_cost = _Ewma()
        self._batch_cost = _Ewma()  # seconds per model run, as the batches really came
        self._prepare_cost = _Ewma()
        self._drain_cost = _Ewma()
        self._drain_mark: float | None = None  # last drain while a backlog remained
        self._span_seconds = 0.0  # backlog time since the last drain sample
        self._span_windows = 0  # and the windows drained in it
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        # Held while the model runs, by a batch or by a worker (``run_if_idle``).
        self._model_lock = threading.Lock()
        self._shared_worker = executor
        self._executor = executor or worker_pool(f"ort-{model.name}", 1, worker_niceness)
        self._task: asyncio.Task[None] | None = None
        self._open = 0  # admissions not yet finished (a long clip holds one between chunks)
        # Set by close(): what a request arriving from then on is refused with.
        self._closed: Callable[[], ApiError] | None = None
        self._depth = metrics.queue_depth.labels(model=model.name)
        self._batch_size = metrics.batch_size.labels(model=model.name)
        self._depth.set(0)

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.model.name}")

    @property
    def admitted(self) -> int:
        """Windows admitted (urgent and bulk) and not yet finished."""
        return self._admitted + self._bulk_admitted

    def estimated_wait(self) -> float:
        """Seconds a new request is expected to take: the admitted urgent work and its own
        window (0 until costs are measured)."""
        per_window = (self._infer_cost.value or 0.0) + (self._prepare_cost.value or 0.0)
        if self._drain_mark is not None and self._drain_cost.value is not None:
            per_window = self._drain_cost.value  # in a backlog: how fast it really drains
        # Bulk work takes up to half of every batch while it waits.
        share = 2.0 if self._bulk or self._bulk_admitted else 1.0
        return (self._admitted + 1) * per_window * share

    def observe_prepare(self, seconds: float, windows: int) -> None:
        """Record what preparing (decode to features) an ordinary request cost per window."""
        if windows > 0:
            self._prepare_cost.add(seconds / windows)

    def _refuse(self, message: str, reason: str) -> ApiError:
        return ApiError(
            503,
            "overloaded",
            f"model {self.model.name!r} {message}; try again shortly",
            reason=reason,
            headers={"Retry-After": str(self.retry_after)},
        )

    def refusal(self) -> ApiError | None:
        """The 503 a request arriving now would get, or None if it would be admitted."""
        if self._closed is not None:
            return self._closed()
        if self._admitted >= self.capacity:
            return self._refuse(f"has {self._admitted} windows queued", "queue_full")
        # A batch's run (as recent batches took) is kept free of the bound: the deadline in
        # ``submit`` is a backstop whose 503s come late, and the time before a request is parsed
        # and after its answer is ready (which grows under a flood) needs room too.
        batch_run = self._batch_cost.value or 0.0
        if self.max_queue and (wait := self.estimated_wait()) + batch_run > self.max_queue:
            return self._refuse(
                f"is {wait * 1000:.0f} ms behind (limit {self.max_queue * 1000:.0f} ms)",
                "queue_time",
            )
        return None

    def admit(self, arrived: float | None = None) -> Admission:
        """The one way in: admit a request, or refuse it (503) at once, before any of its work.

        ``arrived`` (when the server read the request's headers) starts its queue-time deadline;
        without it, admission does.
        """
        admitted = self.reserve()
        return Admission(self, admitted if arrived is None else min(arrived, admitted))

    def reserve(self) -> float:
        """Admit a request by reserving one window, or refuse it (503) at once; returns when it
        was admitted (for :meth:`submit`'s deadline). :meth:`admit` wraps it for callers."""
        if (error := self.refusal()) is not None:
            raise error
        self._admitted += 1
        self.update_depth()
        return time.perf_counter()

    def cancel_reservation(self) -> None:
        """Give back a reservation that will not be used (the request failed before inference,
        or its windows ran with :meth:`run_if_idle`)."""
        self._admitted -= 1
        self.update_depth()
        self._drained(1)

    def _drained(self, windows: int) -> None:
        """``windows`` left the admitted work. While a backlog lasts, the wall time per window
        drained is how fast admitted work really goes; it is measured over spans of at least
        ``_DRAIN_SPAN_SECONDS`` (single batches vary too much: one stalled by a garbage
        collection would make admission refuse what the server could serve in time)."""
        now = time.perf_counter()
        if self._drain_mark is not None:
            self._span_seconds += now - self._drain_mark
            self._span_windows += windows
        if self._span_seconds >= _DRAIN_SPAN_SECONDS:
            self._drain_cost.add(self._span_seconds / self._span_windows)
        if self._span_seconds >= _DRAIN_SPAN_SECONDS or not self.admitted:
            # sampled, or the backlog is over (a span in progress is not a measure of it)
            self._span_seconds, self._span_windows = 0.0, 0
        self._drain_mark = now if self.admitted else None

    async def submit(
        self,
        views: np.ndarray,
        *,
        reserved: bool,
        admitted_at: float | None = None,
        hold: float | None = None,
        company: int | None = None,
    ) -> asyncio.Future:
        """Queue windows; the future resolves to a :class:`BatchResult`.

        ``reserved``: this is the request's urgent submission (up to ``chunk`` windows), which
        uses the reservation made by :meth:`reserve` and never waits; given ``admitted_at`` (what
        :meth:`reserve` returned), it fails with a 503 if its batch has not started
        ``max_queue_ms`` after that. Otherwise a bulk chunk of up to ``bulk_chunk`` windows,
        which waits for room (only on windows already queued). ``hold``: seconds the job may
        wait for others to fill its batch (default ``max_wait_ms``; at most half its time to
        the deadline); ``company``: how many windows can be queued at most while it waits (one from
        each stream on the model), so that none waits for windows that cannot come.
        """
        if self._task is not None and self._task.done() and self._closed is not None:
            raise self._closed()  # the loop is gone: the job would never run
        count = len(views)
        limit = self.chunk if reserved else self.bulk_chunk
        if not 0 < count <= limit:
            raise ValueError(f"submit 1..{limit} windows, got {count}")
        if reserved:
            self._admitted += count - 1
        else:
            while self._bulk_admitted + count > self.capacity:
                self._room.clear()
                await self._room.wait()
                if self._task is not None and self._task.done() and self._closed is not None:
                    raise self._closed()  # closed while this waited: nothing will make room
            self._bulk_admitted += count
        self.update_depth()
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        job = _Job(
            views,
            future,
            bulk=not reserved,
            hold=self.max_wait if hold is None else hold,
            company=math.inf if company is None else company,
        )
        if reserved and admitted_at is not None and self.max_queue:
            job.deadline = admitted_at + self.max_queue
        (self._urgent if reserved else self._bulk).append(job)
        self._arrived.set()
        return future

    def run_if_idle(self, views: np.ndarray) -> BatchResult | None:
        """Run ``views`` at once in the calling (worker) thread if this is the only request
        admitted and the model is idle (nothing queued, no batch running). The lone request of
        an idle server thus runs right after its log-mels, on the thread that computed them, with
        no hand-over to the batching loop and back. None (run nothing) otherwise, or when
        ``views`` are more than one submission may hold: the request then goes through the
        queue, where it can share a batch with the others admitted.

        Called off the event loop: the queue checks are racy reads, and the model lock settles
        the race (a batch that starts meanwhile waits for this run, and the other way round).
        """
        alone = self._admitted == 1 and not self._bulk_admitted  # its own reservation only
        if not alone or not 0 < len(views) <= self.chunk or self._running:
            return None
        if not self._model_lock.acquire(blocking=False):
            return None
        try:
            started = time.perf_counter()
            logits = self.model.run(views)
            return BatchResult(logits, 0.0, time.perf_counter() - started)
        finally:
            self._model_lock.release()

    def record_direct(self, result: BatchResult) -> None:
        """Count a :meth:`run_if_idle` run like a batch (on the event loop)."""
        self._record_run(len(next(iter(result.logits.values()))), result.inference_seconds)
        self.metrics.stages["queue"].observe(0.0)

    def _record_run(self, windows: int, seconds: float) -> None:
        """A model run's cost estimate, batch size and inference time."""
        self.runs += 1
        self._infer_cost.add(seconds / windows)
        self._batch_cost.add(seconds)
        self._batch_size.observe(windows)
        self.metrics.stages["inference"].observe(seconds)

    def _run_batch(self, views: np.ndarray) -> tuple[dict[str, np.ndarray], float, float]:
        """The batch's logits, when it started and how long it ran, timed on the thread that
        ran it (on a shared thread, the job may wait behind preparations first)."""
        with self._model_lock:
            started = time.perf_counter()
            logits = self.model.run(views)
            return logits, started, time.perf_counter() - started

    def update_depth(self) -> None:
        """Set the queue-depth gauge to this batcher's admitted windows."""
        self._depth.set(self._admitted + self._bulk_admitted)

    def _release(self, job: _Job) -> None:
        if job.bulk:
            self._bulk_admitted -= len(job.views)
        else:
            self._admitted -= len(job.views)
        self.update_depth()
        self._room.set()

    def _fill(self, queue: deque[_Job], batch: list[_Job], size: int, most: int) -> int:
        """Move jobs from ``queue`` into ``batch`` while they fit; the new size."""
        taken = 0
        now = time.perf_counter()
        while queue and taken < most and size + len(queue[0].views) <= self.max_batch:
            job = queue.popleft()
            if job.future.cancelled():  # the client went away; drop its windows
                self._release(job)
                continue
            if now > job.deadline:  # answered late is worse than refused with Retry-After
                self._release(job)
                waited = (now - job.deadline + self.max_queue) * 1000
                message = f"waited {waited:.0f} ms (limit {self.max_queue * 1000:.0f} ms)"
                job.future.set_exception(self._refuse(message, "queue_time"))
                continue
            batch.append(job)
            size += len(job.views)
            taken += 1
        return size

    def _take_batch(self) -> list[_Job]:
        batch: list[_Job] = []
        size = self._fill(self._bulk, batch, 0, most=1)
        size = self._fill(self._urgent, batch, size, most=len(self._urgent))
        self._fill(self._bulk, batch, size, most=len(self._bulk))
        return batch

    async def _fill_window(self) -> None:
        """Hold the batch until it is full, or holds all the company its jobs can get, or the
        earliest of its jobs' holds has run out (a job that arrives meanwhile with a shorter
        hold shortens it). A hold takes at most half of a job's time to its deadline, so that
        a held batch still starts in time."""
        while True:
            if self._closed is not None:  # nothing is admitted any more: no company can come
                return
            # A job whose caller gave up will be skipped: it is no company, and has no hold.
            queued = [j for j in (*self._urgent, *self._bulk) if not j.future.cancelled()]
            waiting = sum(len(job.views) for job in queued)
            if not queued or waiting >= min(self.max_batch, *(j.company for j in queued)):
                return
            until = min(
                job.enqueued + min(job.hold, (job.deadline - job.enqueued) / 2) for job in queued
            )
            left = until - time.perf_counter()
            if left <= 0:
                return
            self._arrived.clear()
            try:  # not wait_for: before Python 3.12 it can swallow close()'s cancellation
                async with asyncio.timeout(left):
                    await self._arrived.wait()
            except TimeoutError:
                return

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not (self._urgent or self._bulk):
                self._arrived.clear()
                await self._arrived.wait()
            await self._fill_window()
            # On a shared worker, let the preparations queued before this batch join it.
            if self._shared_worker is not None:
                try:
                    await loop.run_in_executor(self._executor, _nothing)
                except RuntimeError:  # the pool is shut down: close() fails what is left
                    return
            batch = self._take_batch()
            if not batch:
                continue
            self._running = batch
            views = np.concatenate([job.views for job in batch])
            try:
                if self._shared_worker is not None:  # before the preparations queued meanwhile
                    run = asyncio.wrap_future(
                        self._shared_worker.submit_first(self._run_batch, views)
                    )
                else:
                    run = loop.run_in_executor(self._executor, self._run_batch, views)
                logits, started, elapsed = await run
            except Exception as exc:
                logger.exception("inference failed for model %s", self.model.name)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                self._record_run(len(views), elapsed)
                offset = 0
                for job in batch:
                    n = len(job.views)
                    waited = started - job.enqueued
                    self.metrics.stages["queue"].observe(waited)
                    if not job.future.done():
                        part = {h: v[offset : offset + n] for h, v in logits.items()}
                        share = elapsed * n / len(views)
                        job.future.set_result(BatchResult(part, waited, share))
                    offset += n
            finally:
                self._running = []
                for job in batch:
                    self._release(job)
                self._drained(len(views))

    def stop_admitting(self, refusal: Callable[[], ApiError]) -> None:
        """Refuse every request from now on with ``refusal()`` (what :meth:`close` does first,
        here without waiting for the loop to run it)."""
        self._closed = refusal

    async def close(self, timeout: float, refusal: Callable[[], ApiError] = shutting_down) -> None:
        """Refuse new requests with ``refusal()``, let the admitted ones finish (up to
        ``timeout`` seconds; a long clip keeps its admission between chunks), then stop the
        loop: at shutdown, and when the model is unloaded or replaced."""
        self.stop_admitting(refusal)
        self._arrived.set()  # a held batch stops waiting for company (see _fill_window)
        deadline = time.perf_counter() + timeout
        while (self.admitted or self._open) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        leftover = [*self._running, *self._urgent, *self._bulk]
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for job in leftover:
            if not job.future.done():
                job.future.set_exception(refusal())
        self._urgent.clear()
        self._bulk.clear()
        self._room.set()  # wake bulk submits waiting for room: they find the batcher closed
        # A batch still inside ONNX Runtime finishes on its thread; nobody waits for it.
        if self._shared_worker is None:  # a shared pool is its owner's to stop
            self._executor.shutdown(wait=False, cancel_futures=True)


class Admission:
    """A request's place with one model, from admission to its last window (:meth:`Batcher.admit`).

    Its first :meth:`run` of at most one submission's windows uses the reservation made on
    admission (urgent, under the queue-time deadline); any other run is a bulk chunk. A
    reservation not used by then (the request failed, or ran in a worker with
    :meth:`Batcher.run_if_idle`) is given back when the admission is released, at the latest on
    leaving its ``async with``.
    """

    def __init__(self, batcher: Batcher, admitted_at: float) -> None:
        self.batcher = batcher
        self.admitted_at = admitted_at
        self._reserved = True
        self._open = True
        batcher._open += 1

    async def run(
        self, views: np.ndarray, hold: float | None = None, company: int | None = None
    ) -> BatchResult:
        """Run ``views`` through the model's batches and wait for their logits; ``hold`` and
        ``company``: how long they may wait for others to fill their batch (default
        ``max_wait_ms``), and how many windows at most can come (:meth:`Batcher.submit`)."""
        batcher = self.batcher
        urgent = self._reserved and len(views) <= batcher.chunk
        if self._reserved and not urgent:
            self.release()  # too many for one submission: it runs as bulk chunks
        self._reserved = False
        future = await batcher.submit(
            views,
            reserved=urgent,
            admitted_at=self.admitted_at if urgent else None,
            hold=hold,
            company=company,
        )
        try:
            return await future
        finally:
            future.cancel()  # the caller gave up: a queued job is then skipped

    async def run_all(self, views: np.ndarray) -> list[BatchResult]:
        """Run any number of windows: the first submission's worth urgent, the rest in bulk."""
        batcher = self.batcher
        results = [await self.run(views[: batcher.chunk])]
        for start in range(batcher.chunk, len(views), batcher.bulk_chunk):
            results.append(await self.run(views[start : start + batcher.bulk_chunk]))
        return results

    def ran_inline(self, result: BatchResult) -> None:
        """The windows ran in the worker that prepared them (:meth:`Batcher.run_if_idle`)."""
        self.release()
        self.batcher.record_direct(result)

    def release(self) -> None:
        """Give back the reservation if it was not used (idempotent)."""
        if self._reserved:
            self._reserved = False
            self.batcher.cancel_reservation()

    def finish(self) -> None:
        """The request is done with the model (idempotent): its reservation, if unused, is
        given back, and a closing batcher no longer waits for it."""
        self.release()
        if self._open:
            self._open = False
            self.batcher._open -= 1

    async def __aenter__(self) -> Admission:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.finish()
