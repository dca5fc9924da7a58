"""The demo's upload route, closed as a side door: audio only, one file, bounded disk.

Gradio's ``/gradio_api/upload`` stores any file type, several per request, and never deletes
them, so anyone could fill the temp space (and break multipart ``/classify``, which spools there
too). :class:`DemoUploadGuard` sits in front of that route: the body limit is the service's own
(outer middleware); after Gradio has stored an upload, the guard checks that it is one file whose
bytes are an audio container we decode (magic bytes, as ``/classify`` does), deletes it and
answers our JSON error otherwise, and then deletes the oldest uploads while they hold more than
``max_bytes_on_disk``. Uploads live in a directory of this process, emptied on start (with those
of processes that have died) and removed on shutdown; the demo deletes each upload once it has
been classified (:func:`release`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arinext.model.audio_io import AudioError, sniff
from arinext.service.errors import ApiError, insufficient_storage
from arinext.service.http_errors import error_response

__all__ = [
    "DemoUploadGuard",
    "prepare_upload_dir",
    "release",
    "remove_upload_dir",
    "temp_space_low",
    "upload_dir",
]

logger = logging.getLogger(__name__)

_PREFIX = "arinext-demo-uploads-"
_SNIFF_BYTES = 4096


def upload_dir() -> Path:
    """This process's demo upload directory."""
    return Path(tempfile.gettempdir()) / f"{_PREFIX}{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_upload_dir() -> Path:
    """An empty upload directory for this process; those of dead processes are removed."""
    for stale in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        suffix = stale.name.removeprefix(_PREFIX)
        if suffix.isdigit() and int(suffix) != os.getpid() and not _alive(int(suffix)):
            shutil.rmtree(stale, ignore_errors=True)
    directory = upload_dir()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    return directory


def remove_upload_dir() -> None:
    """Delete this process's uploads (on shutdown)."""
    shutil.rmtree(upload_dir(), ignore_errors=True)


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except (OSError, ValueError):
        return False
    return True


def _delete(path: Path, directory: Path) -> None:
    """Delete an uploaded file and the per-upload folders Gradio made for it."""
    with contextlib.suppress(OSError):
        path.unlink()
    parent = path.parent
    while parent != directory and _inside(parent, directory):
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def release(path: str | os.PathLike[str]) -> None:
    """Delete a demo upload once it has been used; paths outside the upload dir are kept."""
    directory = upload_dir()
    candidate = Path(path)
    if _inside(candidate, directory):
        _delete(candidate, directory)


def temp_space_low(reserve_bytes: int) -> bool:
    """True when the temp file system has less than ``reserve_bytes`` free."""
    try:
        return shutil.disk_usage(tempfile.gettempdir()).free < reserve_bytes
    except OSError:
        return True


def _is_audio(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            sniff(f.read(_SNIFF_BYTES))
    except (OSError, AudioError):
        return False
    return True


class DemoUploadGuard:
    """ASGI middleware for the demo's upload route; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        route: str,
        directory: Path,
        max_bytes_on_disk: int,
        retry_after: int = 1,
    ):
        self.app = app
        self.route = route
        self.directory = directory
        self.max_bytes_on_disk = max_bytes_on_disk
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.route:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def keep(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        try:
            await self.app(scope, receive, keep)
        except OSError as exc:
            # Gradio spools uploads to the temp directory and answers a full one with a 500.
            full = insufficient_storage(exc, self.retry_after)
            if full is None:
                raise
            logger.warning("demo upload: %s", exc)
            await error_response(full)(scope, receive, send)
            return
        finally:
            self._enforce_quota()
        if start is None:
            return
        error = self._check(start["status"], bytes(body))
        if error is not None:
            await error_response(error)(scope, receive, send)
            return
        await send(start)
        await send({"type": "http.response.body", "body": bytes(body)})

    def _check(self, status: int, body: bytes) -> ApiError | None:
        """Our error for an upload we refuse (its files deleted), or None to pass it on."""
        if status >= 400:  # Gradio's own refusals are plain text or {"detail": ...}
            text = body.decode("utf-8", "replace").strip()
            with contextlib.suppress(ValueError, AttributeError):
                text = str(json.loads(text).get("detail", text))
            return ApiError(status, "upload_refused", text or "the upload was refused")
        try:
            paths = [Path(p) for p in json.loads(body)]
        except (ValueError, TypeError):
            return None
        stored = [p for p in paths if _inside(p, self.directory)]
        if len(paths) != 1:
            for path in stored:
                _delete(path, self.directory)
            return ApiError(400, "one_file_only", "upload one audio file at a time")
        if stored and not _is_audio(stored[0]):
            _delete(stored[0], self.directory)
            return ApiError(
                415,
                "unsupported_media_type",
                "the demo takes audio files only (WAV, FLAC, Ogg, MP3, AAC/M4A, WebM, MP4)",
            )
        return None

    def _enforce_quota(self) -> None:
        """Delete the oldest uploads while all of them hold more than the quota."""
        files = []
        for path in self.directory.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file():
                    stat = path.stat()
                    files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes_on_disk:
                break
            logger.info("demo uploads over %d bytes: deleting %s", self.max_bytes_on_disk, path)
            _delete(path, self.directory)
            total -= size
