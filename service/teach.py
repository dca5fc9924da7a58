"""Teaching the server a new word: one training run at a time, in a bounded worker process, and
its model served as soon as it verifies.

The demo's *Teach a word* tab (:mod:`arinext.service.demo_teach`) hands :meth:`Teacher.start` a
phrase and 3 to 5 takes of someone saying it. The takes are decoded here (bounded in size and
length) and written as 16 kHz WAV files to a folder of this run, and the trainer runs as a
command, ``ARINEXT_DEMO_TEACH_COMMAND`` (by default ``arinext train-keywords``, which imports
torch; the server never does): through :mod:`arinext.service.teach_launcher`, at low priority
with its address space capped, killed after ``ARINEXT_DEMO_TEACH_TIMEOUT_SECONDS`` or when the
server stops. Its progress is read from the JSON lines it prints (``train-keywords --progress
json``: ``{"event": "progress", "stage": "embedding", "done": 48, "total": 120}``). The artifact
it writes is verified as at start-up (:func:`arinext.service.loading.load_model`) and served
with :meth:`ModelService.put`, so streams started from then on hear it. A run's takes are
deleted when it ends; the last taught model's folder is kept while it is served and removed at
shutdown.

One run at a time: a second request while one runs is refused with a message saying when to
try again, not queued (a run takes minutes of every core).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import soundfile as sf

from arinext.model import audio_io
from arinext.model.manifest import ArtifactError
from arinext.service.inference import ModelService
from arinext.service.loading import load_model
from arinext.service.settings import Settings
from arinext.service.teach_launcher import launcher_argv

__all__ = [
    "MAX_PHRASE_CHARS",
    "MAX_TAKES",
    "MAX_TAKE_BYTES",
    "MIN_TAKES",
    "MODEL_NAME",
    "TeachBusyError",
    "TeachError",
    "TeachJob",
    "Teacher",
    "normalise_phrase",
    "parse_progress",
    "trainer_argv",
]

logger = logging.getLogger(__name__)

# A phrase: 1 to 5 words of letters, with apostrophes inside words ("don't stop").
_PHRASE = re.compile(r"[a-z]+(?:'[a-z]+)*(?: [a-z]+(?:'[a-z]+)*){0,4}")
MAX_PHRASE_CHARS = 48
MIN_TAKES = 3
MAX_TAKES = 5
MIN_TAKE_SECONDS = 0.3
MAX_TAKE_SECONDS = 10.0
MAX_TAKE_BYTES = 5_000_000  # a 10 s take is 1.9 MB as 48 kHz 32-bit float WAV
TAKE_RATE = 16000
# The taught model's name: a new run replaces the last one's model.
MODEL_NAME = "taught"
# Below the server's worker threads (at most 19 levels below the event loop: see Settings).
NICENESS = 10
# ``arinext train-keywords``'s stages, in order; they give the share of a run done.
STAGES = ("synthesis", "augmentation", "embedding", "training")
_TAIL_LINES = 20
_MAX_LINE = 4096


class TeachError(Exception):
    """A request or run the tab refuses; the message is for the person at the page."""


class TeachBusyError(TeachError):
    """Another run is in progress."""


def normalise_phrase(text: str) -> str:
    """The phrase as the trainer gets it (lower case, single spaces), or a ``TeachError``."""
    phrase = " ".join(text.lower().split())
    if not phrase:
        raise TeachError("Type the phrase to teach first.")
    if len(phrase) > MAX_PHRASE_CHARS or not _PHRASE.fullmatch(phrase):
        raise TeachError(
            f"A phrase is 1 to 5 words of letters (apostrophes inside words are fine), at most "
            f"{MAX_PHRASE_CHARS} characters; got {text[:60]!r}."
        )
    return phrase


def parse_progress(line: str) -> tuple[str, int, int] | None:
    """``(stage, done, total)`` of a progress line (``{"event": "progress", "stage": ...,
    "done": ..., "total": ...}``), or None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") != "progress":
        return None
    stage, done, total = event.get("stage"), event.get("done"), event.get("total")
    if not isinstance(stage, str) or not isinstance(done, int) or not isinstance(total, int):
        return None
    return stage[:40], done, total


def trainer_argv(command: str, **fields: str) -> list[str]:
    """``command`` split like a shell line, each word's ``{field}`` filled in (a phrase with
    spaces stays one argument); ``arinext`` is the server's own installation."""
    words = [word.format(**fields) for word in shlex.split(command)]
    if words[0] == "arinext":
        words[:1] = [sys.executable, "-m", "arinext"]
    return words


def _take_as_wav(number: int, data: bytes) -> bytes:
    """One take, checked and rewritten as 16 kHz mono 16-bit WAV for the trainer."""
    if len(data) > MAX_TAKE_BYTES:
        raise TeachError(f"Take {number} is over {MAX_TAKE_BYTES // 1_000_000} MB.")
    try:
        audio = audio_io.decode_resampled(data, [TAKE_RATE], MAX_TAKE_SECONDS)
    except audio_io.AudioError as exc:
        if exc.kind == "too_long":
            raise TeachError(f"Take {number} is longer than {MAX_TAKE_SECONDS:.0f} s.") from None
        raise TeachError(f"Take {number} is not audio we can read: {exc.message}") from None
    if audio.duration < MIN_TAKE_SECONDS:
        raise TeachError(f"Take {number} is shorter than {MIN_TAKE_SECONDS} s.")
    out = io.BytesIO()
    sf.write(out, audio.at_rate[TAKE_RATE], TAKE_RATE, subtype="PCM_16", format="WAV")
    return out.getvalue()


@dataclass
class TeachJob:
    """One run: what it teaches, how far it got and how it ended."""

    phrase: str
    timeout: float
    started: float = field(default_factory=time.monotonic)
    state: Literal["running", "done", "failed"] = "running"
    stage: str = "starting"
    done: int = 0
    total: int = 0
    message: str = ""
    ended: float | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def fraction(self) -> float | None:
        """The share of the run done, from the trainer's stages; None before the first bar."""
        if self.stage == "loading":
            return 1.0
        if self.stage not in STAGES or not self.total:
            return None
        return (STAGES.index(self.stage) + min(self.done / self.total, 1.0)) / len(STAGES)

    def seconds_left(self) -> float:
        """An estimate from the pace so far, never beyond the run's time limit."""
        elapsed = self.elapsed()
        limit = max(0.0, self.timeout - elapsed)
        share = self.fraction()
        if share is None or share < 0.05:
            return limit
        return min(limit, elapsed * (1 - share) / share)

    def busy_message(self) -> str:
        wait = max(10, math.ceil(self.seconds_left() / 10) * 10)
        return f"busy: teaching '{self.phrase}', try again in ~{wait} s"

    def describe(self) -> str:
        """A line of Markdown for the page."""
        if self.state == "done":
            return (
                f"**Learnt '{self.phrase}'** in {self.elapsed():.0f} s: {self.message}. Open "
                "the *Live microphone* tab, start listening and say it."
            )
        if self.state == "failed":
            return f"**Teaching '{self.phrase}' failed**: {self.message}"
        step = f"{self.stage} {self.done}/{self.total}" if self.total else self.stage
        return (
            f"Teaching '{self.phrase}': {step} ({self.elapsed():.0f} s so far, about "
            f"{self.seconds_left():.0f} s left)"
        )

    def end(self, state: Literal["done", "failed"], message: str) -> None:
        self.state, self.message, self.ended = state, message, time.monotonic()


class Teacher:
    """Runs teaching runs one at a time and serves what they produce."""

    def __init__(self, settings: Settings, service: ModelService) -> None:
        self.settings = settings
        self.service = service
        self.job: TeachJob | None = None
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._root: Path | None = None
        self._served: Path | None = None  # the run folder of the model served now
        self._closed = False

    def busy_message(self) -> str | None:
        """What a request arriving now is told, or None when it may start a run."""
        return self.job.busy_message() if self.job is not None and self.job.running else None

    async def start(self, phrase: str, takes: Sequence[bytes]) -> TeachJob:
        """Check the phrase and takes and begin a run (``TeachBusyError`` while one runs)."""
        if busy := self.busy_message():
            raise TeachBusyError(busy)
        phrase = normalise_phrase(phrase)
        if not MIN_TAKES <= len(takes) <= MAX_TAKES:
            raise TeachError(
                f"Record the phrase {MIN_TAKES} to {MAX_TAKES} times; got {len(takes)}."
            )
        wavs = await asyncio.to_thread(
            lambda: [_take_as_wav(i, data) for i, data in enumerate(takes, 1)]
        )
        if busy := self.busy_message():  # another run began while these were decoded
            raise TeachBusyError(busy)
        if self._closed:
            raise TeachError("The server is stopping.")
        job = TeachJob(phrase, self.settings.demo_teach_timeout_seconds)
        self.job = job
        self._task = asyncio.create_task(self._run(job, wavs), name="teach")
        logger.info("teaching %r from %d takes", phrase, len(wavs))
        return job

    def _run_folder(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix=f"arinext-teach-{os.getpid()}-"))
        return Path(tempfile.mkdtemp(prefix="run-", dir=self._root))

    async def _run(self, job: TeachJob, wavs: list[bytes]) -> None:
        folder = self._run_folder()
        served = False
        try:
            artifact = await self._train(job, folder, wavs)
            job.stage = "loading"
            job.end("done", await self._serve(artifact))
            served = True
            logger.info("taught %r in %.0f s", job.phrase, job.elapsed())
        except TeachError as exc:
            job.end("failed", str(exc))
            logger.warning("teaching %r failed: %s", job.phrase, exc)
        except Exception:
            job.end("failed", "an internal error (the server log has it)")
            logger.exception("teaching %r failed", job.phrase)
        finally:
            if job.running:  # cancelled: the server is stopping
                job.end("failed", "the server is stopping")
            shutil.rmtree(folder / "recordings", ignore_errors=True)
            if served:
                if self._served is not None:
                    shutil.rmtree(self._served, ignore_errors=True)
                self._served = folder
            else:
                shutil.rmtree(folder, ignore_errors=True)

    async def _train(self, job: TeachJob, folder: Path, wavs: list[bytes]) -> Path:
        """Run the trainer on the takes; the artifact folder it wrote."""
        takes = folder / "recordings" / job.phrase.replace(" ", "_")

        def write_takes() -> None:
            takes.mkdir(parents=True)
            for i, wav in enumerate(wavs, 1):
                (takes / f"take-{i}.wav").write_bytes(wav)

        await asyncio.to_thread(write_takes)
        out = folder / "artifact"
        argv = trainer_argv(
            self.settings.demo_teach_command,
            phrase=job.phrase,
            recordings=str(takes.parent),
            out=str(out),
            name=MODEL_NAME,
        )
        command = launcher_argv(
            argv, memory_bytes=self.settings.demo_teach_memory_bytes, niceness=NICENESS
        )
        # Its temporary files (clips of the takes among them) go in the run folder, which is
        # deleted however the run ends, and it gets none of the server's secrets.
        scratch = folder / "tmp"
        scratch.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "ARINEXT_REPOSITORY_TOKEN"}
        env.update(TMPDIR=str(scratch), TEMP=str(scratch), TMP=str(scratch))
        process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=folder,
            start_new_session=True,  # its own process group: its workers are killed with it
        )
        self._process = process
        tail: deque[str] = deque(maxlen=_TAIL_LINES)

        async def watch() -> int:
            await self._follow(process, job, tail)
            return await process.wait()

        try:
            code = await asyncio.wait_for(watch(), job.timeout)
        except TimeoutError:
            raise TeachError(f"stopped after {job.timeout:.0f} s, its time limit") from None
        finally:
            _kill(process)
            await process.wait()
            self._process = None
        if code != 0:
            logger.warning("the trainer exited %d; its last lines:\n%s", code, "\n".join(tail))
            last = tail[-1].replace(str(folder), "<run>")[:300] if tail else "no output"
            raise TeachError(f"the trainer exited with status {code}: {last}")
        return out

    async def _follow(
        self, process: asyncio.subprocess.Process, job: TeachJob, tail: deque[str]
    ) -> None:
        """Read the trainer's output to its end: progress bars update ``job``, other lines are
        logged and kept for an error message."""
        assert process.stdout is not None
        pending = b""
        while chunk := await process.stdout.read(65536):
            *lines, pending = re.split(rb"[\r\n]", pending + chunk)
            pending = pending[-_MAX_LINE:]
            for raw in lines:
                line = raw[:_MAX_LINE].decode(errors="replace").strip()
                if not line:
                    continue
                if (progress := parse_progress(line)) is not None:
                    job.stage, job.done, job.total = progress
                else:
                    tail.append(line)
                    logger.debug("trainer: %s", line)

    async def _serve(self, artifact: Path) -> str:
        """Verify and serve the artifact; what is now served, in words."""
        settings = self.settings
        try:
            model = await asyncio.to_thread(
                load_model,
                artifact,
                **settings.runtime_options(),
            )
        except ArtifactError as exc:
            raise TeachError(f"the trained model does not verify: {exc}") from None
        if self.service.draining:
            raise TeachError("the server is stopping")
        try:
            self.service.put(model, settings)
        except ArtifactError as exc:
            raise TeachError(f"it cannot be served beside the other models: {exc}") from None
        heads = ", ".join(head.name for head in model.manifest.heads)
        return f"model `{model.name}` (head {heads}) is served now"

    async def close(self) -> None:
        """Kill a run in progress and delete every file of this teacher (at shutdown)."""
        self._closed = True
        if self._process is not None and self.job is not None and self.job.running:
            _kill(self._process)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


def _kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the run's process group (the trainer and any workers it started), even when the
    trainer itself has ended: its workers may outlive it. Linux does not reuse the number of a
    process group that still has members."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
