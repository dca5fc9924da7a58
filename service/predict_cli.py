"""``arinext predict``: classify local files without a server, in the serve environment.

Files, folders (recursive) and globs are expanded, sorted and de-duplicated, so every run (and
every shard: ``--shard K/N`` takes files K, K+N, K+2N, ...) sees the same list. Decoding,
resampling and log-mels run in ``--jobs`` worker processes; inference runs in this process, with
the windows of many files in shared ONNX Runtime batches. Each file gives one record: its
answer (what ``POST /classify`` returns, without timings) or its error. A bad file never stops
the run, and the exit status is 1 when any file failed (2 for bad usage or no model).
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import io
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

__all__ = ["AUDIO_SUFFIXES", "expand_paths", "register", "select_shard"]

logger = logging.getLogger(__name__)

_EXIT_FAILED_FILES = 1
_EXIT_USAGE = 2
# Files of a folder that are read; files named explicitly or by a glob are read whatever their name.
AUDIO_SUFFIXES = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4", ".aac"}
    | {".webm", ".mkv", ".mka", ".mov"}
)
# Windows gathered before an inference call, and files decoded ahead per worker.
_BATCH_WINDOWS = 64
_AHEAD_PER_JOB = 4


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: K must be in 0..N-1")
    return index, count


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not positive")
        return value

    return parse


def _detection(name: str, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """Parse one detection setting within the bounds every entry point holds it to."""

    def parse(text: str) -> Any:
        from pydantic import ValidationError

        from arinext.service.detection import DetectionParameters

        value = kind(text)
        try:
            DetectionParameters.model_validate({name: value})
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc.errors()[0]['msg']}") from None
        return value

    return parse


def _default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command."""
    parser = subparsers.add_parser(
        "predict",
        help="classify local audio files (no server, no torch)",
        description="Classify files, folders (recursive) and globs with served artifacts. One "
        "record per file: the answer POST /classify gives, or the file's error. Exit status 1 "
        "when any file failed.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files, folders or globs")
    parser.add_argument(
        "--models",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="artifact directories (default: $ARINEXT_MODELS, else the embedded model)",
    )
    parser.add_argument("--heads", help="comma-separated head names (default: every head)")
    parser.add_argument("--top-k", type=_positive(int), default=5, help="labels per head (5)")
    parser.add_argument("--windows", action="store_true", help="add each window's top-k")
    parser.add_argument(
        "--hop",
        type=_positive(float),
        help="seconds between window starts of a clip longer than one window (default 0.25)",
    )
    parser.add_argument(
        "--threshold",
        type=_detection("threshold", float),
        default=None,
        help="score a window's keyword needs to be detected (default: the model's, as a stream's)",
    )
    parser.add_argument(
        "--votes",
        type=_detection("votes", int),
        default=None,
        help="consecutive windows that must agree on a word (default: the model's, as a stream's)",
    )
    parser.add_argument(
        "--debounce",
        type=_detection("debounce", float),
        default=None,
        help="seconds within which a word heard again is one utterance (default: the window)",
    )
    parser.add_argument(
        "--format",
        choices=("jsonl", "csv", "table"),
        default="jsonl",
        help="jsonl (one JSON object per file; default), csv (one row per label) or table",
    )
    parser.add_argument("--output", type=Path, help="write here instead of standard output")
    parser.add_argument(
        "--jobs",
        type=_positive(int),
        default=_default_jobs(),
        help="processes decoding in parallel (default: the CPUs this process may use)",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="K/N",
        help="take files K, K+N, K+2N, ... of the sorted list (e.g. a Kubernetes Indexed Job "
        "passes $JOB_COMPLETION_INDEX/N)",
    )
    parser.set_defaults(func=_predict)


def expand_paths(paths: Iterable[str]) -> tuple[list[Path], list[str]]:
    """The sorted, de-duplicated files named by ``paths``, and the paths that matched nothing."""
    found: set[Path] = set()
    unmatched = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            matches = [
                p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
            ]
        elif path.exists():
            matches = [path]
        elif glob.has_magic(text):
            matches = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
        else:
            matches = []
        if not matches:
            unmatched.append(text)
        found.update(matches)
    return sorted(found, key=lambda p: p.as_posix()), unmatched


def select_shard(files: Sequence[Path], index: int, count: int) -> list[Path]:
    """Every ``count``-th file starting at ``index``: shards are disjoint and cover the list."""
    return list(files[index::count])


@dataclass
class _Failure:
    code: str
    message: str


def _prepare_file(
    path: Path, *, frontends: Sequence, hop: float | None, max_duration: float, max_windows: int
) -> Any:
    """Worker body: the prepared clip, or a :class:`_Failure` (never raises for a bad file)."""
    from arinext.service.errors import ApiError
    from arinext.service.pipeline import prepare_clip

    try:
        return prepare_clip(
            path, frontends, hop=hop, max_duration=max_duration, max_windows=max_windows
        )
    except ApiError as exc:
        return _Failure(exc.code, exc.message)
    except OSError as exc:
        return _Failure("unreadable", exc.strerror or str(exc))


class _InlineExecutor(Executor):
    """Runs submissions at once in this process (``--jobs 1``)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _prepared_in_order(
    executor: Executor, files: Sequence[Path], ahead: int, work: Callable[[Path], Any]
) -> Iterator[tuple[Path, Any]]:
    """Results in file order, with at most ``ahead`` files decoded and waiting."""
    pending: deque[tuple[Path, Future]] = deque()
    remaining = iter(files)
    for path in remaining:
        pending.append((path, executor.submit(work, path)))
        if len(pending) >= ahead:
            break
    while pending:
        path, future = pending.popleft()
        result = future.result()
        nxt = next(remaining, None)
        if nxt is not None:
            pending.append((nxt, executor.submit(work, nxt)))
        yield path, result


class _Writer:
    """Formats records; tables are aligned, so they are written at the end.

    A CSV row is one label of one ``kind``: ``detection`` (a keyword heard, with its window),
    ``clip`` (the clip-level top-k, ranked) or ``window`` (a window's top-k, with ``--windows``).
    """

    _CSV_FIELDS = (
        "path", "head", "model", "kind", "start", "end", "rank", "label", "index", "score"
    )  # fmt: skip

    def __init__(self, stream: IO[str], fmt: str) -> None:
        self.stream = stream
        self.fmt = fmt
        self.rows: list[tuple[str, str, str, str]] = []
        if fmt == "csv":
            self.csv = csv.writer(stream, lineterminator="\n")
            self.csv.writerow([*self._CSV_FIELDS, "error"])

    def write(self, path: Path, answer: dict | None, failure: _Failure | None) -> None:
        name = path.as_posix()
        if self.fmt == "jsonl":
            record: dict[str, Any] = {"path": name}
            if failure is not None:
                record["error"] = {"code": failure.code, "message": failure.message}
            else:
                record.update(answer or {})
            self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self.fmt == "csv":
            self._write_csv(name, answer, failure)
        else:
            self._add_table_rows(name, answer, failure)
        self.stream.flush()

    def _write_csv(self, name: str, answer: dict | None, failure: _Failure | None) -> None:
        if failure is not None:
            fields = len(self._CSV_FIELDS) - 1
            self.csv.writerow([name, *[""] * fields, f"{failure.code}: {failure.message}"])
            return
        for head in (answer or {})["predictions"]:
            where = (name, head["head"], head["model"])
            for found in head.get("detections") or []:
                score = f"{found['score']:.6g}"
                span = (found["start"], found["end"])
                self.csv.writerow([*where, "detection", *span, "", found["label"], "", score, ""])
            spans = [("clip", "", "", head["top_k"])] + [
                ("window", w["start"], w["end"], w["top_k"]) for w in head.get("windows") or []
            ]
            for kind, start, end, labels in spans:
                for rank, item in enumerate(labels, 1):
                    score = f"{item['score']:.6g}"
                    row = [*where, kind, start, end, rank, item["label"], item["index"], score]
                    self.csv.writerow([*row, ""])

    def _add_table_rows(self, name: str, answer: dict | None, failure: _Failure | None) -> None:
        from arinext.service.detection import KeywordEvent, heard

        if failure is not None:
            self.rows.append((name, "ERROR", f"{failure.code}: {failure.message}", ""))
            return

        def labels(items: list[dict]) -> str:
            return ", ".join(f"{x['label']} {x['score']:.3f}" for x in items)

        for head in (answer or {})["predictions"]:
            events = [KeywordEvent.model_validate(d) for d in head.get("detections") or []]
            self.rows.append((name, head["head"], heard(events), labels(head["top_k"])))
            for w in head.get("windows") or []:
                span = f"  {w['start']:.2f}-{w['end']:.2f} s"
                self.rows.append((name, head["head"], span, labels(w["top_k"])))

    def close(self) -> None:
        if self.fmt != "table":
            return
        rows = [("PATH", "HEAD", "HEARD", "TOP LABELS (CLIP AVERAGE)"), *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            cells = [f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False)]
            self.stream.write(f"{'  '.join(cells)}  {row[3]}".rstrip() + "\n")
        self.stream.flush()


def _progress(total: int) -> Any:
    """A tqdm bar on a terminal's stderr (none when stderr is a file or pipe)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="file", disable=None, dynamic_ncols=True, file=sys.stderr)


def _predict(args: argparse.Namespace) -> int:
    from arinext.model.manifest import ArtifactError
    from arinext.service.errors import ApiError
    from arinext.service.pipeline import Classifier
    from arinext.service.prepare import PreparedClip
    from arinext.service.settings import Settings

    files, unmatched = expand_paths(args.paths)
    for text in unmatched:
        sys.stderr.write(f"warning: {text}: no such file, or no audio files in it\n")
    if not files:
        sys.stderr.write("error: no files to classify\n")
        return _EXIT_USAGE
    files = select_shard(files, *args.shard)
    settings = Settings(**({"models": args.models} if args.models else {}))
    directories = settings.model_dirs()
    if not directories:
        sys.stderr.write(
            "error: no model: pass --models DIR or set ARINEXT_MODELS (this install has no "
            f"embedded model at {settings.default_model_dir})\n"
        )
        return _EXIT_USAGE
    try:
        classifier = Classifier.from_artifacts(
            directories,
            providers=settings.providers,
            backend=settings.backend,
            precision=settings.precision,
            max_duration=settings.max_duration_seconds,
            max_windows=settings.max_windows,
        )
    except ArtifactError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return _EXIT_USAGE
    heads = [h.strip() for h in args.heads.split(",") if h.strip()] if args.heads else None
    score: dict[str, Any] = dict(heads=heads, top_k=args.top_k, windows=args.windows)
    if args.threshold is not None:
        score["threshold"] = args.threshold
    if args.debounce is not None:
        score["debounce"] = args.debounce
    if args.votes is not None:
        score["votes"] = args.votes
    try:
        classifier.score([], **score)  # unknown heads or top_k are refused before any decoding
    except ApiError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return _EXIT_USAGE

    work = functools.partial(
        _prepare_file,
        frontends=classifier.frontends,
        hop=args.hop,
        max_duration=settings.max_duration_seconds,
        max_windows=settings.max_windows,
    )

    failed = 0
    with ExitStack() as stack:
        stream = (
            stack.enter_context(args.output.open("w", encoding="utf-8", newline=""))
            if args.output
            else io.TextIOWrapper(
                sys.stdout.buffer, encoding="utf-8", newline="", write_through=True
            )
        )
        writer = _Writer(stream, args.format)
        executor: Executor = (
            # forkserver: workers never inherit this process's ONNX Runtime threads
            stack.enter_context(
                ProcessPoolExecutor(args.jobs, mp_context=get_context("forkserver"))
            )
            if args.jobs > 1
            else _InlineExecutor()
        )
        bar = stack.enter_context(_progress(len(files)))
        batch: list[tuple[Path, PreparedClip]] = []

        def flush() -> None:
            answers = classifier.score([c for _, c in batch], **score)
            for (path, _), answer in zip(batch, answers, strict=True):
                writer.write(
                    path, answer.model_dump(exclude_none=True, exclude={"timing_ms"}), None
                )
            bar.update(len(batch))
            batch.clear()

        ahead = max(2, args.jobs * _AHEAD_PER_JOB)
        for path, result in _prepared_in_order(executor, files, ahead, work):
            if isinstance(result, _Failure):
                flush()  # keep the records in file order
                failed += 1
                sys.stderr.write(f"error: {path}: {result.message}\n")
                writer.write(path, None, result)
                bar.update(1)
                continue
            batch.append((path, result))
            if sum(len(i.views) for _, c in batch for i in c.inputs) >= _BATCH_WINDOWS:
                flush()
        flush()
        writer.close()
        if not args.output:
            stream.detach()
    if failed:
        sys.stderr.write(f"{failed} of {len(files)} files failed\n")
        return _EXIT_FAILED_FILES
    return 0
