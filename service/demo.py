"""The Gradio demo at ``/demo``: upload or record a clip and see what the served heads hear.

It calls :func:`service.predict.classify` in-process (the same pipeline, limits and metrics as
``POST /classify``), never the HTTP API. Uploads are capped by ``max_upload_bytes``; nothing is
shared publicly and no extra file paths are exposed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from fastapi import FastAPI

from model.audio_config import AudioConfig
from model.frontend import log_mel
from service.decoding import DecodedAudio, resample
from service.errors import ApiError
from service.inference import ModelService
from service.predict import ClassifyResponse, classify
from service.settings import Settings

__all__ = ["EXAMPLES_DIR", "build_demo", "mount_demo", "run_demo", "spectrogram_image"]

EXAMPLES_DIR = Path(__file__).parent / "examples"
DEMO_PATH = "/demo"
MAX_HEADS_SHOWN = 8
TOP_K = 5
_SPECTROGRAM_SECONDS = 30.0
_SPECTROGRAM_COLUMNS = 1024
_TIMELINE_HEADERS = ["head", "start (s)", "end (s)", "top label", "score"]

# A dark-to-bright palette (black, purple, orange, pale yellow) for the spectrogram.
_PALETTE = np.array(
    [[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], dtype=np.float32
)


def spectrogram_image(audio: DecodedAudio, cfg: AudioConfig) -> np.ndarray:
    """The log-mel the model sees (start of the clip) as an RGB image, low bins at the bottom."""
    samples = resample(audio.samples, audio.sample_rate, cfg.sample_rate)
    spec = log_mel(samples[: int(_SPECTROGRAM_SECONDS * cfg.sample_rate)], cfg)
    if len(spec) > _SPECTROGRAM_COLUMNS:  # average neighbouring frames to a displayable width
        step = -(-len(spec) // _SPECTROGRAM_COLUMNS)
        usable = len(spec) // step * step
        spec = spec[:usable].reshape(-1, step, spec.shape[1]).mean(axis=1)
    low, high = np.percentile(spec, [1, 99])
    scaled = np.clip((spec - low) / max(high - low, 1e-6), 0, 1).T[::-1]
    position = scaled * (len(_PALETTE) - 1)
    index = np.minimum(position.astype(int), len(_PALETTE) - 2)
    fraction = (position - index)[..., None]
    rgb = _PALETTE[index] * (1 - fraction) + _PALETTE[index + 1] * fraction
    return np.repeat(rgb.astype(np.uint8), 2, axis=0)  # 2 px per mel bin: readable height


def _timeline(response: ClassifyResponse) -> list[list[Any]]:
    rows = []
    for prediction in response.predictions:
        for window in prediction.windows or []:
            best = window.top_k[0]
            rows.append(
                [prediction.head, window.start, window.end, best.label, round(best.score, 4)]
            )
    return rows


async def run_demo(
    service: ModelService, settings: Settings, path: str | None, heads: list[str]
) -> list[Any]:
    """One click of "Classify": a Label per head (others hidden), the spectrogram, the timeline."""
    if not path:
        raise gr.Error("Upload or record a clip first.")
    if not heads:
        raise gr.Error("Choose at least one head.")
    data = await asyncio.to_thread(Path(path).read_bytes)
    try:
        outcome = await classify(
            service,
            data,
            heads=heads,
            top_k=TOP_K,
            windows=True,
            max_duration=settings.max_duration_seconds,
        )
    except ApiError as exc:
        service.metrics.rejections.labels(reason=exc.reason).inc()
        raise gr.Error(exc.message) from exc
    response = outcome.response
    labels: list[Any] = [
        gr.Label(
            value={s.label: s.score for s in prediction.top_k},
            label=f"{prediction.head} ({prediction.model})",
            visible=True,
        )
        for prediction in response.predictions[:MAX_HEADS_SHOWN]
    ]
    labels += [gr.Label(value=None, visible=False)] * (MAX_HEADS_SHOWN - len(labels))
    first_model = service.registry.heads[response.predictions[0].head][0]
    image = await asyncio.to_thread(spectrogram_image, outcome.audio, first_model.manifest.frontend)
    rows = _timeline(response)
    long_clip = len(rows) > len(response.predictions)
    timeline = gr.Dataframe(value=rows if long_clip else None, visible=long_clip)
    return [*labels, image, timeline]


def build_demo(service: ModelService, settings: Settings) -> gr.Blocks:
    """The Blocks UI; heads are filled in on page load (models load after the app is built)."""

    def head_choices() -> gr.CheckboxGroup:
        names = list(service.registry.heads)
        return gr.CheckboxGroup(choices=names, value=names)

    async def run(path: str | None, heads: list[str]) -> list[Any]:
        return await run_demo(service, settings, path, heads)

    with gr.Blocks(title="arinext demo", analytics_enabled=False) as demo:
        gr.Markdown(
            "## arinext: audio classification\n"
            "Upload or record a clip, choose heads, and see each head's top 5. Long clips are "
            "covered by windows; the table shows the top class of each."
        )
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip")
                heads = gr.CheckboxGroup(label="Heads", choices=[])
                button = gr.Button("Classify", variant="primary", elem_id="classify")
                examples = sorted(EXAMPLES_DIR.glob("*.wav"))
                if examples:
                    gr.Examples(examples=[[str(p)] for p in examples], inputs=[audio])
            with gr.Column():
                outputs = [
                    gr.Label(num_top_classes=TOP_K, visible=False, elem_id=f"head-{i}")
                    for i in range(MAX_HEADS_SHOWN)
                ]
                spectrogram = gr.Image(
                    label="Log-mel spectrogram (first model's front-end)",
                    type="numpy",
                    interactive=False,
                )
                timeline = gr.Dataframe(
                    headers=_TIMELINE_HEADERS,
                    label="Timeline: top class per window",
                    visible=False,
                    interactive=False,
                )
        demo.load(head_choices, outputs=heads)
        button.click(run, inputs=[audio, heads], outputs=[*outputs, spectrogram, timeline])
    return demo


def mount_demo(app: FastAPI, service: ModelService, settings: Settings) -> None:
    """Mount the demo at ``/demo`` with the service's upload limit."""
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )  # system fonts: the page fetches nothing from third-party hosts
    gr.mount_gradio_app(
        app,
        build_demo(service, settings),
        path=DEMO_PATH,
        max_file_size=settings.max_upload_bytes,
        footer_links=["api"],
        run_history=False,
        ssr_mode=False,
        enable_monitoring=False,
        mcp_server=False,
        theme=theme,
    )
