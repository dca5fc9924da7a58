"""Generated miniatures of the datasets' official layouts, and a tiny, fast training setup."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import soundfile as sf
import torch
from threadpoolctl import threadpool_limits

# A 4-stage network of width 8 (with tiny_overrides' 0.5 s views of 50 frames: fast on CPU).
TINY_MODEL = {"width": 8, "depths": [1, 1, 1, 1]}


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """One torch and one BLAS thread: on a busy 2-core machine, spinning threads cost 5-10x.

    (What ``OMP_NUM_THREADS=1`` does for a real run; here numpy is already loaded.)
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def tiny_overrides(**extra: object) -> list[str]:
    """``--set`` arguments for a fast run on CPU."""
    values = {
        "audio.window_ms": 20,
        "audio.hop_ms": 10,
        "audio.clip_seconds": 0.5,
        "audio.num_frames": 50,
        "model.width": 8,
        "model.depths": "[1,1,1,1]",
        "init": "none",
        "num_workers": 0,
        "eval_batch_size": 64,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def write_wav(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype)
    return path


def tone(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    return 0.5 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t + rng.uniform(0, 6.28))


def noise(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    out = np.zeros(n)
    length = int(rng.integers(n // 3, n + 1))
    start = int(rng.integers(0, n - length + 1))
    out[start : start + length] = rng.normal(0, 0.3, length)
    return out


def chirp(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """Fast repeated up-sweeps: broadband over a view (unlike a tone), pulsed (unlike noise)."""
    t = np.arange(n) / rate
    period = rng.uniform(0.05, 0.1)
    f0, f1 = rng.uniform(300, 600), rng.uniform(4000, 7000)
    local = np.mod(t, period)
    phase = 2 * np.pi * (f0 * local + (f1 - f0) * local**2 / (2 * period))
    return 0.5 * np.sin(phase)


SOUNDS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "yes": tone,
    "no": noise,
    "up": chirp,
}


def make_speech_commands(
    root: Path,
    *,
    per_word: tuple[int, int, int] = (6, 2, 2),
    rate: int = 16000,
    seconds: tuple[float, float] = (0.3, 0.8),
    seed: int = 0,
) -> Path:
    """Speech Commands v2 layout: ``<word>/<id>_nohash_<k>.wav`` plus the two split lists.

    The words are three of the 35; each is a separable sound class (tones, noise bursts, chirps).
    """
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {"validation": [], "test": []}
    for word, make in SOUNDS.items():
        for split, count in zip(("train", "validation", "test"), per_word, strict=True):
            for k in range(count):
                n = int(rng.uniform(*seconds) * rate)
                name = f"{split[:2]}{k:04x}_nohash_0.wav"
                write_wav(root / word / name, make(rng, n, rate), rate)
                if split in lists:
                    lists[split].append(f"{word}/{name}")
    write_wav(root / "_background_noise_" / "white.wav", rng.normal(0, 0.1, rate), rate)
    (root / "validation_list.txt").write_text("\n".join(lists["validation"]) + "\n")
    (root / "testing_list.txt").write_text("\n".join(lists["test"]) + "\n")
    return root


@pytest.fixture(scope="session")
def speech_commands_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small separable Speech-Commands-like dataset shared by the engine tests."""
    return make_speech_commands(tmp_path_factory.mktemp("speech_commands"), per_word=(8, 3, 3))


def run_cli(*argv: object) -> int:
    """``arinext ARGV`` in this process."""
    from arinext.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="session")
def learnable_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough separable clips for a tiny model to reach >= 95 % in a few epochs."""
    return make_speech_commands(tmp_path_factory.mktemp("separable"), per_word=(30, 10, 10))


class TrainedRun(NamedTuple):
    path: Path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, learnable_root: Path) -> TrainedRun:
    """A tiny model trained from scratch on ``learnable_root`` through ``arinext train``.

    Shared by the learning, evaluation and export tests, so CI trains it once.
    """
    run = tmp_path_factory.mktemp("runs") / "separable"
    code = run_cli(
        "train", "--preset", "finetune-speech-commands", "--data-root", learnable_root,
        "--out", run, "--epochs", 8, "--batch-size", 16, "--lr", 0.05,
        "--set", *tiny_overrides(precise_bn_batches=6),
    )  # fmt: skip
    assert code == 0
    return TrainedRun(run)
