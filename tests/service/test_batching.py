"""The per-model batcher: batching across submissions, bounded admission, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.errors import ApiError
from service.inference import Batcher
from service.metrics import Metrics


class EchoModel:
    """Stands in for a LoadedModel: logits are each view's first value; runs are recorded."""

    name = "echo"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, views: np.ndarray) -> dict[str, np.ndarray]:
        assert self.gate.wait(10)
        time.sleep(self.delay)
        self.batches.append(len(views))
        return {"head": views[:, 0, 0, :1].copy()}


def _views(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(-1, 1, 1, 1).repeat(4, axis=3)


def _batcher(model: EchoModel, **kwargs: float) -> Batcher:
    options = {"max_batch": 4, "max_wait_ms": 20.0, "queue_size": 64, "retry_after": 2}
    options.update(kwargs)
    batcher = Batcher(model, Metrics(), **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


def test_concurrent_submissions_share_batches_and_get_their_own_results() -> None:
    async def scenario() -> tuple[list[float], list[int]]:
        model = EchoModel()
        batcher = _batcher(model, max_batch=4)
        futures = [await batcher.submit(_views(float(i)), reserved=False) for i in range(6)]
        results = await asyncio.gather(*futures)
        await batcher.close(5)
        return [float(r.logits["head"][0, 0]) for r in results], model.batches

    values, batches = asyncio.run(scenario())
    assert values == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert batches == [4, 2]


def test_multi_window_submissions_are_split_back_in_order() -> None:
    async def scenario() -> list[list[float]]:
        batcher = _batcher(EchoModel(), max_batch=8)
        first = await batcher.submit(_views(1, 2, 3), reserved=False)
        second = await batcher.submit(_views(4, 5), reserved=False)
        results = await asyncio.gather(first, second)
        await batcher.close(5)
        return [r.logits["head"][:, 0].tolist() for r in results]

    assert asyncio.run(scenario()) == [[1, 2, 3], [4, 5]]


def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        model = EchoModel()
        model.gate.clear()  # hold the first batch inside the model
        batcher = _batcher(model, queue_size=2, max_batch=2, max_wait_ms=0.0)
        batcher.reserve()
        admitted = await batcher.submit(_views(1), reserved=True)
        batcher.reserve()
        assert batcher.admitted == 2
        started = time.perf_counter()
        with pytest.raises(ApiError) as info:
            batcher.reserve()
        assert time.perf_counter() - started < 0.1
        assert (info.value.status, info.value.reason) == (503, "queue_full")
        assert info.value.headers == {"Retry-After": "2"}
        # An admitted request's further windows wait for room instead of failing.
        waiting = asyncio.ensure_future(batcher.submit(_views(2, 3), reserved=False))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        batcher.cancel_reservation()
        model.gate.set()
        assert (await admitted).logits["head"][:, 0].tolist() == [1]
        assert (await (await waiting)).logits["head"][:, 0].tolist() == [2, 3]
        assert batcher.admitted == 0
        await batcher.close(5)

    asyncio.run(scenario())


def test_the_reserved_submission_is_one_window() -> None:
    async def scenario() -> None:
        batcher = _batcher(EchoModel())
        batcher.reserve()
        with pytest.raises(ValueError):
            await batcher.submit(_views(1, 2), reserved=True)
        batcher.cancel_reservation()
        assert batcher.admitted == 0
        await batcher.close(1)

    asyncio.run(scenario())


def test_cancelled_submissions_are_dropped_and_release_their_room() -> None:
    async def scenario() -> list[int]:
        model = EchoModel()
        model.gate.clear()
        batcher = _batcher(model, queue_size=4, max_batch=1, max_wait_ms=0.0)
        running = await batcher.submit(_views(1), reserved=False)
        await asyncio.sleep(0.05)  # the first batch is now inside the model
        abandoned = await batcher.submit(_views(2), reserved=False)
        abandoned.cancel()
        kept = await batcher.submit(_views(3), reserved=False)
        model.gate.set()
        await asyncio.gather(running, kept)
        assert batcher.admitted == 0
        await batcher.close(5)
        return model.batches

    assert asyncio.run(scenario()) == [1, 1]  # the cancelled window never ran


def test_close_fails_what_is_left_instead_of_hanging() -> None:
    async def scenario() -> None:
        model = EchoModel()
        model.gate.clear()
        batcher = _batcher(model, queue_size=8, max_batch=1, max_wait_ms=0.0)
        first = await batcher.submit(_views(1), reserved=False)
        await asyncio.sleep(0.05)
        queued = await batcher.submit(_views(2), reserved=False)
        threading.Timer(0.2, model.gate.set).start()
        await batcher.close(0.05)
        for future in (first, queued):
            with pytest.raises(ApiError):
                await future

    asyncio.run(scenario())
