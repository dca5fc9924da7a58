"""The Gradio demo at ``/demo``: a clip's labels and pictures, and a live microphone tab.

The clip tab calls :func:`arinext.service.predict.classify` in-process (the same pipeline, limits
and metrics as ``POST /classify``) and draws the log-mel and, for long clips, each top class's score
over time (``arinext.service.demo_plots``). The live tab is plain HTML and JavaScript
(``service/static/live.*``) that records the microphone with MediaRecorder and streams it to ``WS
/stream``, so it exercises exactly what API clients use. Uploads are capped by ``max_upload_bytes``;
nothing is shared publicly and no extra file paths are exposed, and the API reads only files
uploaded to it or its examples (``arinext.service.demo_paths``).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.routing import Mount

from arinext.service.decoding import resample
from arinext.service.demo_paths import DemoPathGuard, ExampleFiles
from arinext.service.demo_plots import display_label, spectrogram_figure, timeline_figure
from arinext.service.demo_teach import teach_tab
from arinext.service.demo_uploads import (
    DemoUploadGuard,
    prepare_upload_dir,
    release,
    remove_upload_dir,
)
from arinext.service.detection import heard
from arinext.service.errors import ApiError
from arinext.service.inference import ModelService
from arinext.service.predict import classify
from arinext.service.settings import Settings
from arinext.service.teach import Teacher

__all__ = ["EXAMPLES_DIR", "build_demo", "mount_demo", "run_demo"]

EXAMPLES_DIR = Path(__file__).parent / "examples"
STATIC_DIR = Path(__file__).parent / "static"
DEMO_PATH = "/demo"
MAX_HEADS_SHOWN = 8
TOP_K = 5
# Per-window labels fetched for the timeline chart, so a top class's line is exact wherever it
# is among a window's best 50 (and near 0 elsewhere).
_TIMELINE_TOP_K = 50
# How often Gradio's queue looks for work while idle: its own values on Windows. Elsewhere it
# looks every 1 ms (and for progress every 10 ms), on the event loop that reads the API's
# requests; docs/performance.md has what that cost.
QUEUE_POLL_SECONDS = 0.05
PROGRESS_POLL_SECONDS = 0.1

logger = logging.getLogger(__name__)


async def run_demo(
    service: ModelService, settings: Settings, path: str | None, heads: list[str]
) -> list[Any]:
    """One click of "Classify": for a clip longer than a window, what was heard and when (the
    detections, as a stream reports them) above everything; a Label per head with the whole
    clip's average top-5 (others hidden); the spectrogram with the detections marked; the
    timeline.

    Scores are rounded to 4 places for display; "none of these" classes read "no keyword".
    """
    if not path:
        raise gr.Error("Upload or record a clip first.")
    if not heads:
        raise gr.Error("Choose at least one head.")
    try:
        data = await asyncio.to_thread(Path(path).read_bytes)
    except FileNotFoundError:  # used already, or deleted to keep the uploads under their quota
        raise gr.Error("That upload is gone; upload or record the clip again.") from None
    release(path)  # an upload is used once; examples (outside the upload dir) are kept
    try:
        outcome = await classify(
            service,
            data,
            heads=heads,
            top_k=_TIMELINE_TOP_K,
            windows=True,
            max_duration=settings.max_duration_seconds,
        )
    except ApiError as exc:
        service.metrics.child(service.metrics.rejections, exc.reason).inc()
        raise gr.Error(exc.message) from exc
    response = outcome.response
    long_clip = any(len(p.windows or []) > 1 for p in response.predictions)
    shown = response.predictions[:MAX_HEADS_SHOWN]
    headline = "\n\n".join(
        f"### Heard{f' ({p.head})' if len(shown) > 1 else ''}: {heard(p.detections)}" for p in shown
    )
    labels: list[Any] = [
        gr.Label(
            value={display_label(s.label): round(s.score, 4) for s in prediction.top_k[:TOP_K]},
            label=f"{prediction.head} ({prediction.model})"
            + (": the whole clip's average" if long_clip else ""),
            visible=True,
        )
        for prediction in response.predictions[:MAX_HEADS_SHOWN]
    ]
    labels += [gr.Label(value=None, visible=False)] * (MAX_HEADS_SHOWN - len(labels))
    served = service.registry.heads.get(response.predictions[0].head)
    if served is None:  # unloaded by the model repository since this request ran
        raise gr.Error(f"model {response.predictions[0].model!r} was unloaded; try again")
    cfg = served[0].manifest.frontend
    audio = outcome.audio
    samples = await asyncio.to_thread(resample, audio.samples, audio.sample_rate, cfg.sample_rate)
    marks = shown[0].detections if long_clip else []
    spectrogram = await asyncio.to_thread(spectrogram_figure, samples, cfg, marks)
    timeline = await asyncio.to_thread(timeline_figure, shown) if long_clip else None
    return [
        gr.Markdown(value=headline, visible=long_clip),
        *labels,
        gr.Plot(value=spectrogram),
        gr.Plot(value=timeline, visible=long_clip),
    ]


def build_demo(
    service: ModelService, settings: Settings, teacher: Teacher | None = None
) -> tuple[gr.Blocks, list[str]]:
    """The Blocks UI, and the files it serves for its examples (Gradio's copies of them).

    Heads are filled in on page load (models load after the app is built). With a ``teacher``,
    the *Teach a word* tab too (``arinext.service.demo_teach``).
    """

    def head_choices() -> gr.CheckboxGroup:
        names = list(service.registry.heads)
        return gr.CheckboxGroup(choices=names, value=names)

    async def run(path: str | None, heads: list[str]) -> list[Any]:
        return await run_demo(service, settings, path, heads)

    with gr.Blocks(title="arinext demo", analytics_enabled=False) as demo:
        gr.Markdown(
            "## arinext: audio classification\n"
            "**Clip**: upload or record a clip, choose heads, and see each head's top 5, the "
            "log-mel the model reads and, for long clips, each top class's score over time. "
            "**Live microphone**: speak and watch what the model hears as you talk."
            + (
                " **Teach a word**: record a phrase of your own and have it heard live."
                if teacher is not None
                else ""
            )
        )
        with gr.Tab("Clip", id="clip"):
            with gr.Row():
                with gr.Column():
                    audio = gr.Audio(
                        sources=["upload", "microphone"], type="filepath", label="Clip"
                    )
                    heads = gr.CheckboxGroup(label="Heads", choices=[])
                    button = gr.Button("Classify", variant="primary", elem_id="classify")
                    examples = sorted(EXAMPLES_DIR.glob("*.wav"))
                    shown_examples = gr.Examples(
                        examples=[[str(p)] for p in examples], inputs=[audio]
                    )
                with gr.Column():
                    heard_now = gr.Markdown(visible=False, elem_id="heard")
                    outputs = [
                        gr.Label(num_top_classes=TOP_K, visible=False, elem_id=f"head-{i}")
                        for i in range(MAX_HEADS_SHOWN)
                    ]
            spectrogram = gr.Plot(label="Log-mel spectrogram", elem_id="spectrogram")
            timeline = gr.Plot(label="Scores over time", visible=False, elem_id="timeline")
        with gr.Tab("Live microphone", id="live"):
            gr.HTML(
                (STATIC_DIR / "live.html").read_text(encoding="utf-8"),
                css_template=(STATIC_DIR / "live.css").read_text(encoding="utf-8"),
                js_on_load=(STATIC_DIR / "live.js").read_text(encoding="utf-8"),
                elem_id="live",
            )
        if teacher is not None:
            teach_tab(teacher)
        demo.load(head_choices, outputs=heads)
        button.click(
            run, inputs=[audio, heads], outputs=[heard_now, *outputs, spectrogram, timeline]
        )
    return demo, _served_copies(shown_examples)


def _served_copies(examples: gr.helpers.Examples) -> list[str]:
    """Where Gradio copied the example files to serve them (its players fetch these)."""
    return [
        value["path"]
        for row in examples.non_none_processed_examples.values()
        for value in row
        if isinstance(value, dict) and isinstance(value.get("path"), str)
    ]


def _drop_gradio_cors(demo_app: Any) -> None:
    """Take Gradio's CORS middleware out of the mounted demo, before its first request.

    It answers every request that has an ``Origin`` with ``Access-Control-Allow-Credentials:
    true`` and echoes the origin back: any origin when the server is reached by a name other
    than localhost, any localhost origin (another port: another local app) otherwise. So pages of
    other origins could read the demo's answers in their visitors' browsers. The demo's own page
    is of the server's origin and needs no CORS headers at all.
    """
    cors = getattr(gr.route_utils, "CustomCORSMiddleware", None)
    kept = [m for m in demo_app.user_middleware if cors is None or m.cls is not cors]
    if len(kept) == len(demo_app.user_middleware):
        logger.warning("Gradio's CORS middleware not found; the demo's CORS headers are Gradio's")
    demo_app.user_middleware = kept


def mount_demo(
    app: FastAPI, service: ModelService, settings: Settings, teacher: Teacher | None = None
) -> None:
    """Mount the demo at ``/demo`` with the service's upload limit."""
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )  # system fonts: the page fetches nothing from third-party hosts
    demo, example_copies = build_demo(service, settings, teacher)
    gr.mount_gradio_app(
        app,
        demo,
        path=DEMO_PATH,
        # Gradio builds file URLs (the examples' players) from the root path, not the mount.
        root_path=DEMO_PATH,
        # The demo's uploads go to a folder of its own (below), so Gradio's file route would
        # refuse its copies of the examples: these exact files are allowed, nothing else.
        allowed_paths=example_copies,
        max_file_size=settings.max_upload_bytes,
        footer_links=["api"],
        run_history=False,
        ssr_mode=False,
        enable_monitoring=False,
        mcp_server=False,
        theme=theme,
    )
    _quiet_queue(demo)
    _root_requests(app)
    # Uploads go to a directory of this process that the guard polices
    # (arinext.service.demo_uploads).
    uploads = prepare_upload_dir()
    atexit.register(remove_upload_dir)
    for route in app.routes:
        if isinstance(route, Mount) and route.path == DEMO_PATH:
            route.app.uploaded_file_dir = str(uploads)  # type: ignore[attr-defined]
            _drop_gradio_cors(route.app)
    upload_route = f"{DEMO_PATH}/gradio_api/upload"
    app.add_middleware(
        DemoUploadGuard,
        route=upload_route,
        directory=uploads,
        max_bytes_on_disk=max(settings.demo_temp_bytes, settings.max_upload_bytes),
        retry_after=settings.retry_after_seconds,
    )
    # Gradio trusts the file paths of mounted apps' requests; this checks them first.
    gradio_cache = getattr(demo, "GRADIO_CACHE", None)
    app.add_middleware(
        DemoPathGuard,
        prefix=DEMO_PATH,
        skip=upload_route,
        upload_dir=uploads,
        examples=ExampleFiles(EXAMPLES_DIR.glob("*.wav")),
        cache_dirs=[Path(gradio_cache)] if isinstance(gradio_cache, str) else [],
    )


def _root_requests(app: FastAPI) -> None:
    """Answer what a browser asks the site root for on every demo page: Gradio's page links
    ``/manifest.json`` at the root, not under its mount, and browsers ask for ``/favicon.ico``.
    """

    async def manifest() -> JSONResponse:
        return JSONResponse(
            {"name": "arinext demo", "short_name": "arinext", "start_url": f"{DEMO_PATH}/"},
            media_type="application/manifest+json",
        )

    async def favicon() -> Response:
        return Response(status_code=204)  # no icon, and nothing to log as missing

    app.add_api_route("/manifest.json", manifest, include_in_schema=False)
    app.add_api_route("/favicon.ico", favicon, include_in_schema=False)


def _quiet_queue(demo: gr.Blocks) -> None:
    """Make Gradio's idle queue poll at its Windows pace instead of every millisecond.

    Gradio has no public setting for it, so this sets the attributes its queue reads; if a
    Gradio release renames them, the demo still works (polling as before) and this says so.
    A click (or page load) then waits up to ``QUEUE_POLL_SECONDS`` longer to start, per job
    queued ahead of it.
    """
    queue = getattr(demo, "_queue", None)
    names = ("sleep_when_free", "progress_update_sleep_when_free")
    if queue is None or not all(isinstance(getattr(queue, n, None), float) for n in names):
        logger.warning("Gradio's queue has no poll intervals to set; it polls at its own pace")
        return
    queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_POLL_SECONDS)
    queue.progress_update_sleep_when_free = max(
        queue.progress_update_sleep_when_free, PROGRESS_POLL_SECONDS
    )
