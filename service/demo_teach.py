"""The demo's *Teach a word* tab: a phrase, 3 to 5 takes recorded in the browser, *Teach*.

Shown only with ``ARINEXT_DEMO_TEACH=true``: a run takes minutes of every core. The tab is the
page side of :class:`arinext.service.teach.Teacher`, which runs the trainer and serves its model;
this module reads the takes (uploads to the demo, which its path guard already polices), starts
a run and shows its progress until it ends. Pressing *Teach* while a run is in progress (from
any page) gets a busy message at once, never a place in a queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr

from arinext.service.demo_uploads import release
from arinext.service.teach import (
    MAX_PHRASE_CHARS,
    MAX_TAKE_BYTES,
    MAX_TAKES,
    MIN_TAKES,
    TeachBusyError,
    Teacher,
    TeachError,
)

__all__ = ["teach_tab"]

logger = logging.getLogger(__name__)

# How often the page is told how far a run got.
PROGRESS_SECONDS = 1.0


def _read_takes(paths: list[str]) -> list[bytes]:
    takes = []
    for number, path in enumerate(paths, 1):
        try:
            if Path(path).stat().st_size > MAX_TAKE_BYTES:
                raise gr.Error(f"Take {number} is over {MAX_TAKE_BYTES // 1_000_000} MB.")
            takes.append(Path(path).read_bytes())
        except FileNotFoundError:  # deleted to keep the uploads under their quota
            raise gr.Error(f"Take {number} is gone; record it again.") from None
    return takes


async def teach(teacher: Teacher, phrase: str, *paths: str | None) -> AsyncIterator[Any]:
    """One press of *Teach*: start a run and report its progress until it ends."""
    if busy := teacher.busy_message():
        gr.Warning(busy)
        yield gr.skip()
        return
    chosen = [path for path in paths if path]
    takes = await asyncio.to_thread(_read_takes, chosen)
    try:
        job = await teacher.start(phrase, takes)
    except TeachBusyError as exc:
        gr.Warning(str(exc))
        yield gr.skip()
        return
    except TeachError as exc:
        logger.info("teach refused: %s", exc)
        raise gr.Error(str(exc)) from None
    for path in chosen:
        release(path)
    while job.running:
        yield job.describe()
        await asyncio.sleep(PROGRESS_SECONDS)
    yield job.describe()


def teach_tab(teacher: Teacher) -> None:
    """Add the tab to the Blocks being built."""

    async def run(phrase: str, *paths: str | None) -> AsyncIterator[Any]:
        async for update in teach(teacher, phrase, *paths):
            yield update

    with gr.Tab("Teach a word", id="teach"):
        gr.Markdown(
            f"Type a phrase of 1 to 5 words, record yourself saying it {MIN_TAKES} to "
            f"{MAX_TAKES} times (one take per box) and press **Teach**. A keyword model for it "
            "is trained on this server (a few minutes) and served beside the others; then "
            "start listening in the *Live microphone* tab and say it. One phrase is taught at "
            "a time, and a new one replaces the last."
        )
        phrase = gr.Textbox(
            label="Phrase",
            placeholder="lights on",
            max_length=MAX_PHRASE_CHARS,
            elem_id="teach-phrase",
        )
        with gr.Row():
            takes = [
                gr.Audio(
                    sources=["microphone", "upload"],
                    type="filepath",
                    label=f"Take {i}",
                    elem_id=f"teach-take-{i}",
                    min_width=200,
                )
                for i in range(1, MAX_TAKES + 1)
            ]
        button = gr.Button("Teach", variant="primary", elem_id="teach-button")
        status = gr.Markdown(elem_id="teach-status")
    # Runs at once however many presses are in flight (each but the run's own ends at once),
    # and a second press on the same page is answered too.
    button.click(
        run,
        inputs=[phrase, *takes],
        outputs=status,
        concurrency_limit=None,
        trigger_mode="multiple",
    )
