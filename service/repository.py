"""The model repository: artifact folders of one directory, loaded and unloaded at run time.

The Open Inference Protocol's model repository extension (``arinext.service.routers.repository``) is
the HTTP side; this is the framework-free rest. A model's name is its folder's name, and the
artifact's manifest must carry that name (as Triton requires of a model's directory), so the
name in ``/v2/repository/models/{name}/load`` is the name ``/v2/models/{name}`` then answers to.

A load runs the verification of start-up (:func:`arinext.service.loading.load_model`: manifest,
sha256, the graph's inputs and outputs, a warm-up run) on a thread of its own, so the event loop
keeps serving; only a verified model is swapped in (:meth:`ModelService.put`), in one step of the
loop. Loads and unloads run one at a time, and a few at most wait their turn: a storm of them is
refused (503), not queued without bound.

Names are checked before any file is touched: a bounded set of characters (no separators, no
leading dot), and the folder and its files must resolve inside the repository, so neither a
name nor a symbolic link can make the server open a file elsewhere.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from arinext.model.manifest import MANIFEST_FILE, MODEL_FILE, ArtifactError
from arinext.service.errors import ApiError
from arinext.service.inference import ModelService
from arinext.service.loading import LoadedModel, load_model
from arinext.service.settings import Settings
from arinext.service.workers import worker_pool

__all__ = ["NAME_PATTERN", "ModelRepository", "RepositoryEntry"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# A model name: what a folder may be called to be served from the repository.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Repository operations that may wait while one runs; more are refused at once.
_MAX_WAITING = 4
# Folders an index lists at most (a listing stays small whatever the directory holds).
_MAX_ENTRIES = 1000


@dataclass(frozen=True)
class RepositoryEntry:
    """One model of the index: ``READY`` (served) or ``UNAVAILABLE`` with the reason."""

    name: str
    state: str
    reason: str = ""


class ModelRepository:
    """Loads and unloads the artifact folders of ``settings.model_repository``."""

    def __init__(self, settings: Settings, service: ModelService) -> None:
        assert settings.model_repository is not None
        self.root = settings.model_repository.resolve()
        self.settings = settings
        self.service = service
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._reasons: dict[str, str] = {}  # why a folder is not served, after a load or unload
        self._thread: ThreadPoolExecutor = worker_pool("repository", 1, settings.worker_niceness)

    def folder(self, name: str) -> Path:
        """The artifact folder of ``name``, checked: 400 for a name that is not a model name,
        404 when the repository has no such folder or it leads outside the repository."""
        if not NAME_PATTERN.fullmatch(name):
            raise ApiError(
                400,
                "invalid_model_name",
                f"a model name is 1 to 64 of A-Z a-z 0-9 . _ - and starts with a letter or "
                f"digit; got {name[:80]!r}",
            )
        folder = self.root / name
        try:  # a link loop raises RuntimeError, an unreadable folder OSError
            resolved = folder.resolve()
            inside = resolved.is_relative_to(self.root) and resolved != self.root
            if not inside or not resolved.is_dir():
                raise ApiError(404, "unknown_model", f"the repository has no model {name!r}")
            for file in (MANIFEST_FILE, MODEL_FILE):
                path = folder / file
                if path.exists() and not path.resolve().is_relative_to(self.root):
                    raise ApiError(
                        400, "load_failed", f"model {name!r}: {file} leads outside the repository"
                    )
        except (OSError, RuntimeError):
            raise ApiError(404, "unknown_model", f"the repository has no model {name!r}") from None
        return resolved

    def index(self, *, ready_only: bool = False) -> list[RepositoryEntry]:
        """The repository's folders, and the models served from elsewhere (``ARINEXT_MODELS``),
        by name."""
        served = self.service.registry.models
        try:
            names = {
                path.name
                for path in itertools.islice(self.root.iterdir(), _MAX_ENTRIES)
                if NAME_PATTERN.fullmatch(path.name) and path.is_dir()
            }
        except OSError as exc:  # unmounted or unreadable since start-up
            raise ApiError(
                503, "repository_unavailable", f"the model repository cannot be read: {exc}"
            ) from None
        entries = []
        for name in sorted(names | set(served)):
            if name in served:
                entries.append(RepositoryEntry(name, "READY"))
            elif not ready_only:
                entries.append(RepositoryEntry(name, "UNAVAILABLE", self._reasons.get(name, "")))
        return entries

    async def load(self, name: str) -> LoadedModel:
        """Verify, open and serve ``name`` (in place of the served model of that name, if
        any); on any failure what was served goes on being served."""
        return await self._one_at_a_time(self._load(name))

    async def unload(self, name: str) -> None:
        """Stop serving ``name``; requests it admitted finish. The last model stays: a server
        with none would be up but answer nothing, so load another first."""
        await self._one_at_a_time(self._unload(name))

    async def _one_at_a_time(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run ``operation`` alone, to its end even when the caller goes away (a load cut in
        half would leave the thread working while the next one starts)."""
        if self._lock.locked() and self._waiting >= _MAX_WAITING:
            operation.close()
            raise ApiError(
                503,
                "repository_busy",
                "other repository operations are in progress; try again",
                reason="repository_busy",
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )
        self._waiting += 1

        async def run() -> T:
            async with self._lock:
                self._waiting -= 1
                try:
                    self._check_serving()
                except ApiError:
                    operation.close()  # never started: no "never awaited" warning
                    raise
                return await operation

        task = asyncio.ensure_future(run())
        # Retrieved even when nobody awaits it any more, so it is not logged as lost.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(task)

    def _check_serving(self) -> None:
        service = self.service
        if service.draining:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        if service.status == "loading":
            raise ApiError(
                503,
                "not_ready",
                "the configured models are still loading",
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )

    async def _load(self, name: str) -> LoadedModel:
        folder = self.folder(name)
        settings = self.settings
        began = time.perf_counter()
        try:
            model = await asyncio.get_running_loop().run_in_executor(
                self._thread, self._verified, folder, name
            )
            self._check_serving()  # no new batcher once the server has begun to stop
            self.service.put(model, settings)
        except ArtifactError as exc:
            message = str(exc).replace(str(self.root), "<repository>")
            if len(self._reasons) < _MAX_ENTRIES:
                self._reasons[name] = f"load failed: {message}"
            logger.warning("repository: refused to load %s: %s", name, message)
            raise ApiError(400, "load_failed", f"model {name!r} not loaded: {message}") from None
        self._reasons.pop(name, None)
        logger.info(
            "repository: loaded %s (sha256 %s, heads %s) in %.2f s",
            name,
            model.manifest.sha256[:12],
            ", ".join(h.name for h in model.manifest.heads),
            time.perf_counter() - began,
        )
        return model

    def _verified(self, folder: Path, name: str) -> LoadedModel:
        """:func:`load_model` (start-up's checks), and the manifest's name is the folder's."""
        model = load_model(folder, **self.settings.runtime_options())
        if model.name != name:
            raise ArtifactError(
                f"folder {name!r} holds model {model.name!r}: name the folder after the model"
            )
        return model

    async def _unload(self, name: str) -> None:
        if name not in self.service.registry.models:
            raise ApiError(404, "unknown_model", f"model {name[:80]!r} is not loaded")
        if len(self.service.registry.models) == 1:
            raise ApiError(
                409,
                "last_model",
                f"model {name!r} is the last one served; load another before unloading it",
            )
        self.service.remove(name)
        if NAME_PATTERN.fullmatch(name) and len(self._reasons) < _MAX_ENTRIES:
            self._reasons[name] = "unloaded"
        logger.info("repository: unloaded %s", name)

    def close(self) -> None:
        """Release the loading thread (a load still running finishes on it)."""
        self._thread.shutdown(wait=False, cancel_futures=True)
