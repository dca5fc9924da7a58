"""The demo's API reads only files it was given: uploads to it and its own examples.

Gradio's event routes (``/gradio_api/call/...``, ``/gradio_api/queue/join``, ...) take file
inputs as ``{"path": ...}`` and copy that path into Gradio's cache before the handler runs.
Gradio checks that the path was uploaded only for apps it launched itself, not for apps mounted
with ``mount_gradio_app``, so any server file (or ``/dev/zero``, or a URL it would fetch) could be
read. :class:`DemoPathGuard` parses every JSON body sent to the demo before Gradio sees it and
refuses it with 403 unless each ``path`` in it is a regular file in this process's upload
directory, a bundled example, or a copy of an example under the temp directory (where Gradio
caches the examples it shows). Only ``stat`` and, for example-sized files, a read of an
example's size happen before the answer, whatever Gradio's version does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arinext.service.errors import ApiError
from arinext.service.http_errors import error_response

__all__ = ["DemoPathGuard", "ExampleFiles", "file_paths"]

logger = logging.getLogger(__name__)

_URL_SCHEMES = ("http://", "https://", "ftp://", "file:", "data:")


def file_paths(value: Any) -> Iterator[Any]:
    """Every ``path`` value of a dict anywhere in ``value`` (iteratively: nesting is unbounded)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "path" in item:
                yield item["path"]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _digest(path: Path, size: int) -> str | None:
    try:
        with path.open("rb") as f:
            return hashlib.sha256(f.read(size + 1)).hexdigest()
    except OSError:
        return None


class ExampleFiles:
    """The bundled examples, known by path and by (size, sha256) for Gradio's cached copies."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = {p.resolve() for p in paths}
        self.contents: dict[int, set[str]] = {}
        for path in self.paths:
            size = path.stat().st_size
            digest = _digest(path, size)
            if digest is not None:
                self.contents.setdefault(size, set()).add(digest)

    def is_copy(self, path: Path, info: os.stat_result) -> bool:
        """True when ``path`` (a regular file) holds exactly one example's bytes."""
        digests = self.contents.get(info.st_size)
        return digests is not None and _digest(path, info.st_size) in digests


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


class DemoPathGuard:
    """ASGI middleware refusing demo requests that name files the demo was not given."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefix: str,
        skip: str,
        upload_dir: Path,
        examples: ExampleFiles,
        cache_dirs: Iterable[Path] = (),
    ) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/") + "/"
        self.skip = skip
        self.upload_dir = upload_dir.resolve()
        self.examples = examples
        roots = [Path(tempfile.gettempdir()), *cache_dirs]
        self.cache_dirs = [root.resolve() for root in roots]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.startswith(self.prefix)
            or path == self.skip
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # the body's size is bounded by BodyLimitMiddleware, outside this one
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        error = self._check(body)
        if error is not None:
            await error_response(error)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _check(self, body: bytes) -> ApiError | None:
        try:
            data = json.loads(body)
        except RecursionError:
            return ApiError(400, "invalid_json", "the JSON body is nested too deeply")
        except ValueError:
            return None  # not JSON: Gradio refuses it itself, and reads no file for it
        for value in file_paths(data):
            if not self._allowed(value):
                logger.info("demo: refused a request naming the file %r", str(value)[:200])
                return ApiError(
                    403,
                    "file_not_allowed",
                    "the demo reads only files uploaded to it and its own examples",
                    reason="bad_request",
                )
        return None

    def _allowed(self, value: Any) -> bool:
        if value is None:
            return True  # an empty input ("no clip yet"): the handler says so
        if not isinstance(value, str) or not value or value.lower().startswith(_URL_SCHEMES):
            return False
        try:
            path = Path(value).resolve(strict=True)
            info = path.stat()
        except (OSError, RuntimeError, ValueError):
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        if path in self.examples.paths or _inside(path, self.upload_dir):
            return True
        in_cache = any(_inside(path, root) for root in self.cache_dirs)
        return in_cache and self.examples.is_copy(path, info)
