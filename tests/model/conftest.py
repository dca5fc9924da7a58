"""Shared fixtures of the model tests."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads of a 2-thread
    pool slow these small forwards down by up to 10x.

    Torch-free model tests (front-end, manifest) also run in a serving install without torch;
    there is nothing to configure then.
    """
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
