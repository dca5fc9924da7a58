"""The per-model batcher: adaptive batching, fair classes, bounded admission, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from arinext.service import inference
from arinext.service.batching import Batcher
from arinext.service.errors import ApiError
from arinext.service.metrics import Metrics
from arinext.service.workers import SharedWorker
from tests.service.audio import encode_sf, signal
from tests.service.conftest import isolated_settings, serve_in_process

WAV = {"content-type": "audio/wav"}


class EchoModel:
    """Stands in for a LoadedModel: logits are each view's first value; runs are recorded."""

    name = "echo"

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def run(self, views: np.ndarray) -> dict[str, np.ndarray]:
        self.entered.set()
        assert self.gate.wait(10)
        self.batches.append(views[:, 0, 0, 0].tolist())
        return {"head": views[:, 0, 0, :1].copy()}


def _views(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(-1, 1, 1, 1).repeat(4, axis=3)


def _batcher(model: EchoModel, **kwargs: float) -> Batcher:
    options = {"max_batch": 4, "max_wait_ms": 0.0, "queue_size": 64, "retry_after": 2}
    options.update(kwargs)
    batcher = Batcher(model, Metrics(), **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def _held(model: EchoModel, batcher: Batcher, value: float) -> asyncio.Future:
    """Submit one window and wait until its batch is inside the (gated) model."""
    model.gate.clear()
    model.entered.clear()
    batcher.reserve()
    future = await batcher.submit(_views(value), reserved=True)
    assert await asyncio.to_thread(model.entered.wait, 10)
    return future


def test_a_lone_request_runs_at_once_and_arrivals_during_a_batch_form_the_next() -> None:
    async def scenario() -> list[list[float]]:
        model = EchoModel()
        batcher = _batcher(model, max_batch=4)
        first = await _held(model, batcher, 0)  # ran alone: nothing made it wait for company
        futures = []
        for i in range(1, 7):
            batcher.reserve()
            futures.append(await batcher.submit(_views(float(i)), reserved=True))
        model.gate.set()
        results = await asyncio.gather(first, *futures)
        assert [float(r.logits["head"][0, 0]) for r in results] == [0, 1, 2, 3, 4, 5, 6]
        assert batcher.admitted == 0
        await batcher.close(5)
        return model.batches

    assert asyncio.run(scenario()) == [[0], [1, 2, 3, 4], [5, 6]]


def test_max_wait_is_an_optional_hold_that_default_settings_do_not_use() -> None:
    async def scenario(max_wait_ms: float) -> bool:
        batcher = _batcher(EchoModel(), max_batch=4, max_wait_ms=max_wait_ms)
        batcher.reserve()
        future = await batcher.submit(_views(1), reserved=True)
        done, _ = await asyncio.wait([future], timeout=0.5 if max_wait_ms else 10)
        await batcher.close(0)
        return bool(done)

    assert asyncio.run(scenario(0.0))  # the default: run what is queued at once
    assert not asyncio.run(scenario(60_000.0))  # a deliberate hold really holds


def test_a_held_job_waits_for_company_and_a_job_without_a_hold_cuts_it_short() -> None:
    async def scenario() -> None:
        model = EchoModel()
        batcher = _batcher(model, max_batch=4)
        futures = []
        for value in (1.0, 2.0):  # a stream's windows: they may wait a minute for a fuller batch
            batcher.reserve()
            futures.append(await batcher.submit(_views(value), reserved=True, hold=60.0))
        done, _ = await asyncio.wait(futures, timeout=0.3)
        assert not done and model.batches == []
        batcher.reserve()  # a request that may not wait: the batch runs now, with all three
        futures.append(await batcher.submit(_views(3), reserved=True, hold=0.0))
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert model.batches == [[1.0, 2.0, 3.0]]
        for value in (4.0, 5.0, 6.0, 7.0):  # a full batch runs without waiting out its hold
            batcher.reserve()
            futures.append(await batcher.submit(_views(value), reserved=True, hold=60.0))
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert model.batches[1:] == [[4.0, 5.0, 6.0, 7.0]]
        await batcher.close(0)

    asyncio.run(scenario())


def test_a_held_job_stops_waiting_once_all_the_company_it_can_get_is_queued() -> None:
    async def scenario() -> None:
        model = EchoModel()
        batcher = _batcher(model, max_batch=8)
        futures = []
        batcher.reserve()  # one of two streams' windows: only the other one's can still come
        futures.append(await batcher.submit(_views(1), reserved=True, hold=60.0, company=2))
        done, _ = await asyncio.wait(futures, timeout=0.3)
        assert not done and model.batches == []
        batcher.reserve()
        futures.append(await batcher.submit(_views(2), reserved=True, hold=60.0, company=2))
        await asyncio.wait_for(asyncio.gather(*futures), 10)  # not after the minute's hold
        assert model.batches == [[1.0, 2.0]]
        batcher.reserve()  # the only stream on its model: nobody's window can join it
        await asyncio.wait_for(
            await batcher.submit(_views(3), reserved=True, hold=60.0, company=1), 10
        )
        assert model.batches[1:] == [[3.0]]
        await batcher.close(0)

    asyncio.run(scenario())


def test_a_window_whose_stream_gave_up_is_no_company() -> None:
    async def scenario() -> None:
        model = EchoModel()
        batcher = _batcher(model, max_batch=8)
        batcher.reserve()
        gone = await batcher.submit(_views(1), reserved=True, hold=60.0, company=2)
        gone.cancel()  # its stream closed while the window waited
        batcher.reserve()
        waiting = await batcher.submit(_views(2), reserved=True, hold=60.0, company=2)
        done, _ = await asyncio.wait([waiting], timeout=0.3)
        assert not done and model.batches == []  # still waiting for the other stream's window
        batcher.reserve()
        other = await batcher.submit(_views(3), reserved=True, hold=60.0, company=2)
        await asyncio.wait_for(asyncio.gather(waiting, other), 10)
        assert model.batches == [[2.0, 3.0]]
        await batcher.close(0)

    asyncio.run(scenario())


def test_closing_ends_every_hold_at_once() -> None:
    async def scenario() -> None:
        model = EchoModel()
        batcher = _batcher(model, max_batch=8)
        batcher.reserve()
        held = await batcher.submit(_views(1), reserved=True, hold=60.0, company=2)
        batcher.reserve()
        gone = await batcher.submit(_views(2), reserved=True, hold=60.0, company=3)
        gone.cancel()  # a window its stream gave up on (late) still counts until it is dropped
        done, _ = await asyncio.wait([held], timeout=0.3)
        assert not done and model.batches == []
        began = time.perf_counter()
        await batcher.close(30)  # nothing admitted from now on: no company can come
        assert time.perf_counter() - began < 5
        assert float((await held).logits["head"][0, 0]) == 1  # run, not waited out or refused
        assert model.batches == [[1.0]] and batcher.admitted == 0

    asyncio.run(scenario())


def test_a_hold_takes_at_most_half_the_time_to_the_queue_deadline() -> None:
    async def scenario() -> None:
        model = EchoModel()
        batcher = _batcher(model, max_batch=8, max_queue_ms=2000.0)
        started = time.perf_counter()
        future = await batcher.submit(
            _views(1), reserved=True, admitted_at=batcher.reserve(), hold=60.0
        )
        result = await asyncio.wait_for(future, 10)  # run, not refused at its deadline
        assert float(result.logits["head"][0, 0]) == 1
        assert 0.9 < time.perf_counter() - started < 2.0  # held about 1 s of the 2
        await batcher.close(0)

    asyncio.run(scenario())


def test_multi_window_submissions_are_split_back_in_order_with_shares_of_the_batch() -> None:
    async def scenario() -> None:
        model = EchoModel()
        batcher = _batcher(model, max_batch=8)
        held = await _held(model, batcher, 0)
        batcher.reserve()
        first = await batcher.submit(_views(1, 2, 3), reserved=True)
        batcher.reserve()
        second = await batcher.submit(_views(4, 5), reserved=True)
        model.gate.set()
        _, a, b = await asyncio.gather(held, first, second)
        assert a.logits["head"][:, 0].tolist() == [1, 2, 3]
        assert b.logits["head"][:, 0].tolist() == [4, 5]
        assert model.batches == [[0], [1, 2, 3, 4, 5]]
        # The batch's run time is split by windows: 3/5 and 2/5 of it.
        assert a.inference_seconds == pytest.approx(b.inference_seconds * 1.5)
        await batcher.close(5)

    asyncio.run(scenario())


def test_bulk_chunks_of_long_clips_cannot_starve_urgent_requests() -> None:
    async def scenario() -> list[list[float]]:
        model = EchoModel()
        batcher = _batcher(model, max_batch=4)
        assert batcher.bulk_chunk == 2
        held = await _held(model, batcher, 0)
        bulk = [await batcher.submit(_views(10 + i, 10 + i), reserved=False) for i in range(3)]
        urgent = []
        for i in range(1, 5):
            batcher.reserve()
            urgent.append(await batcher.submit(_views(float(i)), reserved=True))
        model.gate.set()
        await asyncio.gather(held, *bulk, *urgent)
        assert batcher.admitted == 0
        await batcher.close(5)
        return model.batches

    # Each batch: one bulk chunk first (long clips progress), then urgent windows in order.
    assert asyncio.run(scenario()) == [[0], [10, 10, 1, 2], [11, 11, 3, 4], [12, 12]]


def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        model = EchoModel()
        batcher = _batcher(model, queue_size=2, max_batch=2)
        admitted = await _held(model, batcher, 1)
        batcher.reserve()
        assert batcher.admitted == 2
        with pytest.raises(ApiError) as info:
            batcher.reserve()
        assert (info.value.status, info.value.reason) == (503, "queue_full")
        assert info.value.headers == {"Retry-After": "2"}
        # An admitted request's bulk chunks wait for room instead of failing.
        await batcher.submit(_views(2), reserved=False)
        await batcher.submit(_views(3), reserved=False)
        waiting = asyncio.ensure_future(batcher.submit(_views(4), reserved=False))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        batcher.cancel_reservation()
        model.gate.set()
        assert (await admitted).logits["head"][:, 0].tolist() == [1]
        assert (await (await waiting)).logits["head"][:, 0].tolist() == [4]
        assert batcher.admitted == 0
        await batcher.close(5)

    asyncio.run(scenario())


def test_admission_is_bounded_in_time_by_the_measured_cost_per_window() -> None:
    async def scenario() -> None:
        model = EchoModel()
        batcher = _batcher(model, queue_size=1000, max_queue_ms=100.0)
        for _ in range(10):
            batcher.reserve()  # nothing is measured yet: only the count bounds admission
        for _ in range(10):
            batcher.cancel_reservation()
        batcher.observe_prepare(0.03, 1)  # 30 ms per window to prepare
        for _ in range(3):
            batcher.reserve()  # the third is expected to finish after about 90 ms
        with pytest.raises(ApiError) as info:
            batcher.reserve()  # a fourth would take about 120 ms, over the bound
        assert (info.value.status, info.value.reason) == (503, "queue_time")
        assert info.value.headers == {"Retry-After": "2"}
        for _ in range(3):
            batcher.cancel_reservation()
        batcher.reserve()  # room again once admitted work is gone
        batcher.cancel_reservation()
        await batcher.close(1)

    asyncio.run(scenario())


def test_admission_counts_how_slowly_a_backlog_really_drains() -> None:
    """Preparing a window costs 1 ms of CPU, but on a core shared with other work (parsing and
    refusing a flood of requests) each takes 30 ms to come through: admission counts the 30."""

    async def scenario() -> None:
        model = EchoModel()  # runs in microseconds
        batcher = _batcher(model, queue_size=1000, max_queue_ms=100.0)
        for _ in range(7):
            batcher.reserve()
        for i in range(6):  # the seventh stays admitted: the backlog goes on
            await asyncio.sleep(0.03)  # preparing, with the core shared
            batcher.observe_prepare(0.001, 1)  # the preparation's own CPU time
            await (await batcher.submit(_views(float(i)), reserved=True))
        assert batcher.admitted == 1
        assert batcher.estimated_wait() >= 0.05  # two windows at the rate the backlog drains
        added = 0
        with pytest.raises(ApiError) as info:
            while True:  # ~30 ms a window: 3 fit the 100 ms bound (by the costs alone: ~90)
                batcher.reserve()
                added += 1
                assert added <= 2
        assert info.value.reason == "queue_time" and added >= 1
        for _ in range(added + 1):
            batcher.cancel_reservation()
        await batcher.close(1)

    asyncio.run(scenario())


def test_a_request_whose_batch_would_start_after_the_bound_is_refused_not_answered_late() -> None:
    async def scenario() -> None:
        model = EchoModel()
        batcher = _batcher(model, max_batch=1, max_queue_ms=50.0)
        first = await _held(model, batcher, 0)  # the model is busy until the gate opens
        late = await batcher.submit(_views(1), reserved=True, admitted_at=batcher.reserve())
        batcher.reserve()
        on_time = await batcher.submit(_views(2), reserved=True)  # no deadline given
        await asyncio.sleep(0.1)  # twice the bound
        model.gate.set()
        await first
        with pytest.raises(ApiError) as info:
            await late
        assert (info.value.status, info.value.reason) == (503, "queue_time")
        assert info.value.headers == {"Retry-After": "2"}
        assert float((await on_time).logits["head"][0, 0]) == 2
        assert model.batches == [[0], [2]]  # the late window never ran
        assert batcher.admitted == 0
        await batcher.close(1)

    asyncio.run(scenario())


def test_submissions_are_limited_to_a_batch_or_half_a_batch_for_bulk() -> None:
    async def scenario() -> None:
        batcher = _batcher(EchoModel(), max_batch=4)
        batcher.reserve()
        with pytest.raises(ValueError):
            await batcher.submit(_views(1, 2, 3, 4, 5), reserved=True)
        with pytest.raises(ValueError):
            await batcher.submit(_views(1, 2, 3), reserved=False)
        batcher.cancel_reservation()
        assert batcher.admitted == 0
        await batcher.close(1)

    asyncio.run(scenario())


def test_cancelled_submissions_are_dropped_and_release_their_room() -> None:
    async def scenario() -> list[list[float]]:
        model = EchoModel()
        batcher = _batcher(model, queue_size=4, max_batch=1)
        running = await _held(model, batcher, 1)
        abandoned = await batcher.submit(_views(2), reserved=False)
        abandoned.cancel()
        kept = await batcher.submit(_views(3), reserved=False)
        model.gate.set()
        await asyncio.gather(running, kept)
        assert batcher.admitted == 0
        await batcher.close(5)
        return model.batches

    assert asyncio.run(scenario()) == [[1], [3]]  # the cancelled window never ran


def test_close_fails_what_is_left_instead_of_hanging() -> None:
    async def scenario() -> None:
        model = EchoModel()
        batcher = _batcher(model, queue_size=8, max_batch=1)
        first = await _held(model, batcher, 1)
        queued = await batcher.submit(_views(2), reserved=False)
        threading.Timer(0.2, model.gate.set).start()
        began = time.perf_counter()
        await batcher.close(0.05)
        assert time.perf_counter() - began < 5
        for future in (first, queued):
            with pytest.raises(ApiError):
                await future

    asyncio.run(scenario())


def test_a_worker_runs_the_model_at_once_only_for_the_one_request_admitted() -> None:
    async def scenario() -> tuple[list[list[float]], list[float]]:
        model = EchoModel()
        batcher = _batcher(model, max_batch=4)
        batcher.reserve()  # the request's own reservation: it is alone
        direct = await asyncio.to_thread(batcher.run_if_idle, _views(0, 1))
        assert direct is not None and direct.queue_seconds == 0.0
        assert await asyncio.to_thread(batcher.run_if_idle, _views(*range(5))) is None  # > chunk
        batcher.reserve()  # another request admitted: both go through the queue and can share
        assert await asyncio.to_thread(batcher.run_if_idle, _views(9)) is None
        batcher.cancel_reservation()
        batcher.cancel_reservation()
        held = await _held(model, batcher, 2)  # a batch is running (gated inside the model)
        batcher.reserve()
        assert await asyncio.to_thread(batcher.run_if_idle, _views(9)) is None
        queued = await batcher.submit(_views(3), reserved=True)
        model.gate.set()
        values = [float(r.logits["head"][0, 0]) for r in await asyncio.gather(held, queued)]
        assert batcher.admitted == 0
        await batcher.close(5)
        return model.batches, values

    batches, values = asyncio.run(scenario())
    assert batches == [[0, 1], [2], [3]] and values == [2, 3]


@pytest.mark.parametrize("shared", [True, False])
def test_on_a_shared_worker_a_batch_takes_the_requests_prepared_before_it(shared: bool) -> None:
    """A one-CPU server runs batches on its one preparation thread: a batch waits for the
    preparations queued before it there, and takes the requests they produce."""

    async def scenario() -> list[list[float]]:
        loop = asyncio.get_running_loop()
        pool = SharedWorker("shared")
        model = EchoModel()
        options = {"max_batch": 8, "queue_size": 64, "retry_after": 2}
        batcher = Batcher(model, Metrics(), executor=pool if shared else None, **options)
        batcher.start()
        busy = threading.Event()
        pool.submit(busy.wait, 10)  # the thread is preparing something else

        async def request(value: float, prepare: bool) -> float:
            batcher.reserve()
            if prepare:  # decode and log-mel on the worker thread, as classify does
                await loop.run_in_executor(pool, time.sleep, 0.01)
            future = await batcher.submit(_views(value), reserved=True)
            return float((await future).logits["head"][0, 0])

        later = [asyncio.create_task(request(v, prepare=True)) for v in (1, 2)]
        await asyncio.sleep(0.05)  # both preparations are queued behind the busy one
        first = asyncio.create_task(request(0, prepare=False))
        await asyncio.sleep(0.05)
        busy.set()
        assert await asyncio.gather(first, *later) == [0, 1, 2]
        await batcher.close(5)
        assert pool.submit(int).result(5) == 0  # the pool is its owner's: still running
        pool.shutdown()
        return model.batches

    batches = asyncio.run(scenario())
    if shared:
        assert batches == [[0, 1, 2]]
    else:  # on a thread of its own, the first request ran alone, at once
        assert batches[0] == [0] and [v for b in batches for v in b] == [0, 1, 2]


def test_on_a_shared_worker_a_taken_batch_runs_before_later_preparations() -> None:
    """Once a batch is formed it runs next on the shared thread, after the preparation already
    running but before those queued after it (each would add its time to the wait of the
    batch's requests, past the deadline checked when the batch was taken)."""
    order: list[str] = []

    class OrderedModel(EchoModel):
        def run(self, views: np.ndarray) -> dict[str, np.ndarray]:
            order.append("batch")
            return super().run(views)

    def prepare(name: str, seconds: float) -> None:
        time.sleep(seconds)
        order.append(name)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = SharedWorker("shared-order")
        options = {"max_batch": 8, "queue_size": 64, "retry_after": 2}
        batcher = Batcher(OrderedModel(), Metrics(), executor=worker, **options)  # type: ignore[arg-type]
        batcher.start()
        busy = threading.Event()
        worker.submit(busy.wait, 10)
        batcher.reserve()
        answer = await batcher.submit(_views(0), reserved=True)
        await asyncio.sleep(0.02)  # the batcher's wait for earlier preparations is queued
        preparations = [
            loop.run_in_executor(worker, prepare, "prepare 1", 0.1),  # running as the batch forms
            loop.run_in_executor(worker, prepare, "prepare 2", 0.0),
        ]
        busy.set()
        await asyncio.gather(answer, *preparations)
        await batcher.close(5)
        worker.shutdown()

    asyncio.run(scenario())
    # The batch may even beat "prepare 1" to the thread; it must not wait for "prepare 2".
    assert order[-1] == "prepare 2" and sorted(order) == ["batch", "prepare 1", "prepare 2"]


def test_on_one_cpu_requests_prepared_while_the_model_waits_share_one_batch(
    speech_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the app: three requests whose preparations queue behind other work on a one-CPU
    server's single worker thread run as one batch (each request's windows reach the batcher in
    the same loop step as its log-mels, before the batch is taken)."""
    monkeypatch.setattr(inference, "cpu_threads", lambda: 1)
    clip = encode_sf(signal(1.0, 16000), 16000, "WAV", "PCM_16")
    settings = isolated_settings(models=[speech_artifact], worker_threads=1)
    with serve_in_process(settings) as client:
        service = client.app.state.models  # type: ignore[attr-defined]
        assert service.shared_worker is not None
        batcher = next(iter(service.batchers.values()))
        before = batcher.runs
        busy = threading.Event()
        service.workers.submit(busy.wait, 10)  # the one thread is busy with something else
        with ThreadPoolExecutor(3) as pool:
            answers = [
                pool.submit(client.post, "/classify", content=clip, headers=WAV) for _ in range(3)
            ]
            deadline = time.monotonic() + 10
            while batcher.admitted < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # all three admitted, their preparations queued
            busy.set()
            assert [answer.result(30).status_code for answer in answers] == [200] * 3
        assert batcher.runs == before + 1
