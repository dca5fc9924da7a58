"""What every dataset shares: a list of clips, audio loading, and clip -> log-mel views.

A reader (one module per dataset) only turns the dataset's official layout into a
:class:`ClipIndex`: where each clip's audio is (a file, or a sample range of a recording in an
HDF5 file), its class per head, and the label names. :class:`ClipDataset` does the rest the same
way for all of them: decode with soundfile, resample with soxr when the rate differs from the
audio preset, then the shared front-end ``arinext.model.frontend`` (a random view while training,
evenly spaced test views while evaluating) and SpecAugment for training only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from arinext.model import audio_io
from arinext.model.audio_config import AudioConfig
from arinext.model.frontend import clip_view, log_mel_views
from arinext.model.labels import SILENCE
from arinext.training.augment import spec_augment
from arinext.training.config import AugmentConfig, UserError
from arinext.training.waveform_augment import WaveformAugmenter, degrade

__all__ = [
    "Clip",
    "ClipDataset",
    "ClipIndex",
    "DatasetError",
    "EvalBatch",
    "collate_eval",
    "decode_audio",
    "find_annotations",
    "label_lookup",
    "read_annotation_table",
    "resample",
]

logger = logging.getLogger(__name__)

Mode = Literal["train", "eval"]


class DatasetError(UserError):
    """The dataset layout or annotations are not what the reader expects."""


@dataclass(frozen=True, slots=True)
class Clip:
    """One labelled clip.

    ``path`` is an audio file, or an HDF5 file when ``key`` names the recording inside it;
    ``start``/``stop``, when given, are sample indices at the recording's own rate.
    """

    path: str
    labels: tuple[int, ...]  # one class index per head, in ClipIndex.heads order
    key: str | None = None
    start: int | None = None
    stop: int | None = None


@dataclass
class ClipIndex:
    """A dataset split as a reader produces it."""

    dataset: str
    split: str
    clips: list[Clip]
    heads: dict[str, list[str]]  # head name -> class names in output order
    # Named groups of clip indices reported separately (EPIC-100 "unseen" participants).
    subsets: dict[str, list[int]] = field(default_factory=dict)
    # Sample rate of HDF5 recordings (files carry their own).
    hdf5_rate: int | None = None
    # Recorded background noise (no labels) for the waveform chain's noise pool.
    noise: list[Clip] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.clips:
            raise DatasetError(f"{self.dataset}/{self.split}: no clips found")


def read_annotation_table(path: Path) -> pd.DataFrame:
    """A CSV, or (only because the authors publish them) a pandas pickle.

    Unpickling runs code from the file, so pickles are read only from paths the user named, with
    ``pandas.read_pickle``; prefer the official CSVs.
    """
    if path.suffix in (".pkl", ".pickle"):
        logger.info("reading pickle %s (pickles execute code: only use files you trust)", path)
        return pd.read_pickle(path)
    return pd.read_csv(path)


def find_annotations(directory: Path, stem: str) -> Path:
    """``<stem>.csv`` in ``directory``, else the authors' ``<stem>.pkl``."""
    for suffix in (".csv", ".pkl"):
        path = directory / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise DatasetError(f"{directory}: neither {stem}.csv nor {stem}.pkl")


def label_lookup(names: Sequence[str], dataset: str) -> dict[str, int]:
    """Class name -> index, failing loudly on duplicate names."""
    lookup = {name: i for i, name in enumerate(names)}
    if len(lookup) != len(names):
        raise DatasetError(f"{dataset}: duplicate class names")
    return lookup


def decode_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Mono float32 in [-1, 1] and the rate (``arinext.model.audio_io``, as served)."""
    return audio_io.read_file(path)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """soxr's high-quality resampler (``arinext.model.audio_io``, as served); no-op at one rate."""
    return audio_io.resample(samples, rate, target)


@dataclass
class EvalBatch:
    """A batch of clips for evaluation: all views of all clips, stacked.

    Clips shorter than one view have a single view; ``views`` says how many rows of ``inputs``
    belong to each clip, so scores are averaged per clip without wasting compute on copies.
    """

    inputs: torch.Tensor  # (sum(views), 1, frames, mels)
    labels: torch.Tensor  # (clips, heads)
    views: torch.Tensor  # (clips,)
    indices: torch.Tensor  # (clips,) positions in the dataset


def collate_eval(items: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> EvalBatch:
    """DataLoader collate for ``ClipDataset`` in eval mode."""
    return EvalBatch(
        inputs=torch.from_numpy(np.concatenate([views for views, _, _ in items])),
        labels=torch.from_numpy(np.stack([labels for _, labels, _ in items])),
        views=torch.tensor([len(views) for views, _, _ in items]),
        indices=torch.tensor([index for _, _, index in items]),
    )


class ClipDataset(Dataset):
    """Log-mel views of a :class:`ClipIndex`.

    ``mode="train"``: one random view per clip plus SpecAugment, item ``(x[1,T,F], labels)``.
    ``mode="eval"``: the preset's evenly spaced test views, item ``(x[V,1,T,F], labels, index)``
    (use :func:`collate_eval`). Randomness comes from ``(seed, epoch, index)`` only, so results
    do not depend on worker count or order; call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        index: ClipIndex,
        audio: AudioConfig,
        mode: Mode,
        *,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        condition: str = "clean",
    ) -> None:
        self.index = index
        # Evaluation through a channel (``arinext.training.waveform_augment.CONDITIONS``), applied
        # to each clip as read, seeded by its position: measured without writing degraded copies.
        self.condition = condition
        self.audio = audio
        self.mode = mode
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = seed
        self.epoch = 0
        self._cache: list[np.ndarray] | None = None
        self._h5: dict[str, Any] = {}
        self._h5_pid: int | None = None
        self._resample_logged = False
        self.waveform_augmenter: WaveformAugmenter | None = None
        if mode == "train" and self.augment is not None and self.augment.waveform:
            self.waveform_augmenter = WaveformAugmenter(
                audio.sample_rate,
                rooms=self.augment.rooms,
                seed=seed,
                recorded_noise=[
                    resample(*self._read(clip), audio.sample_rate) for clip in index.noise
                ],
            )
        names = next(iter(index.heads.values()))
        silence = names.index(SILENCE) if SILENCE in names else -1
        # Babble is made of speech: never of the non-speech class.
        self._speech = [i for i, c in enumerate(index.clips) if c.labels[0] != silence]
        self._silence = silence

    @property
    def heads(self) -> dict[str, list[str]]:
        return self.index.heads

    def __len__(self) -> int:
        return len(self.index.clips)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random views/augmentations (workers copy it at each epoch)."""
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        # Open HDF5 handles cannot cross into worker processes; each opens its own.
        state = dict(self.__dict__)
        state["_h5"] = {}
        state["_h5_pid"] = None
        return state

    # --- audio ---------------------------------------------------------------------------

    def _hdf5_dataset(self, path: str, key: str) -> Any:
        import h5py

        if self._h5_pid != os.getpid():  # forked or unpickled: never reuse a parent's handle
            self._h5 = {}
            self._h5_pid = os.getpid()
        handle = self._h5.get(path)
        if handle is None:
            handle = self._h5[path] = h5py.File(path, "r")
        return handle[key]

    def _read(self, clip: Clip) -> tuple[np.ndarray, int]:
        if clip.key is None:
            samples, rate = decode_audio(clip.path)
            return samples[clip.start : clip.stop], rate
        data = self._hdf5_dataset(clip.path, clip.key)
        samples = np.asarray(data[clip.start : clip.stop])
        if samples.ndim > 1:
            samples = samples.mean(axis=-1)
        if np.issubdtype(samples.dtype, np.integer):
            samples = samples / float(np.iinfo(samples.dtype).max + 1)
        rate = self.index.hdf5_rate or int(data.attrs.get("sample_rate", self.audio.sample_rate))
        return samples.astype(np.float32, copy=False), rate

    def waveform(self, i: int) -> np.ndarray:
        """Clip ``i`` decoded and resampled to the preset rate (from the cache when filled)."""
        if self._cache is not None:
            return self._cache[i]
        samples, rate = self._read(self.index.clips[i])
        if rate != self.audio.sample_rate and not self._resample_logged:
            logger.info(
                "%s/%s: resampling %d Hz audio to %d Hz with soxr",
                self.index.dataset,
                self.index.split,
                rate,
                self.audio.sample_rate,
            )
            self._resample_logged = True
        return resample(samples, rate, self.audio.sample_rate)

    def cache_audio(self, threads: int = 2, progress: bool = True) -> None:
        """Decode every clip once, in this process, before DataLoader workers fork.

        Worker processes then share the arrays copy-on-write, so an epoch costs only the
        front-end and the network. Memory: 4 bytes per sample (Speech Commands: ~6 GB).
        """
        if self._cache is not None:
            return
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            waves = list(
                tqdm(
                    pool.map(self.waveform, range(len(self))),
                    total=len(self),
                    desc=f"caching {self.index.dataset}/{self.index.split}",
                    disable=not progress,
                )
            )
        self._cache = waves
        self._h5 = {}

    # --- items ---------------------------------------------------------------------------

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, i))

    def _babble(self, rng: np.random.Generator) -> np.ndarray:
        """Another training clip's speech, as one talker of background babble."""
        return self.waveform(self._speech[int(rng.integers(len(self._speech)))])

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        samples = self.waveform(i)
        labels = np.asarray(self.index.clips[i].labels, dtype=np.int64)
        if self.mode == "eval":
            if self.condition != "clean":
                samples = degrade(samples, self.audio.sample_rate, self.condition, seed=i)
            return log_mel_views(samples, self.audio), labels, i
        rng = self._rng(i)
        slack = len(samples) - self.audio.clip_samples
        start = int(rng.integers(0, slack + 1)) if slack > 0 else 0
        if self.waveform_augmenter is not None:
            window = samples[start : start + self.audio.clip_samples]
            samples = self.waveform_augmenter(
                window, rng, is_speech=int(labels[0]) != self._silence, babble=self._babble
            )
            start = 0
        spec = clip_view(samples, start, self.audio)
        if self.augment is not None:
            spec = spec_augment(spec, self.augment, rng)
        return torch.from_numpy(np.ascontiguousarray(spec[None])), torch.from_numpy(labels)
