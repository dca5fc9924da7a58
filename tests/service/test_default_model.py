"""The shipped default model (``make default-model``): integrity, recorded recipe, and real use.

The end-to-end test speaks fresh words with espeak-ng voices that the training split never had
(the test voices recorded in the manifest, with a seed the dataset did not use) and sends them
through a real ``arinext serve`` process, the way a user's first request would go.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from model.manifest import MODEL_FILE, read_manifest, sha256_file, verify_artifact
from tests.service.conftest import REPO, run_server
from training.synth_speech import Item, Recipe, espeak_available, render_item

ARTIFACT = REPO / "artifacts" / "speech-commands-synth-b0"
MAX_BYTES = 15 * 1024 * 1024
FRESH_SEED = 20_260_101  # not the dataset's seed: these exact utterances were never rendered
FRESH_UTTERANCES = 20

needs_artifact = pytest.mark.skipif(
    not (ARTIFACT / MODEL_FILE).is_file(), reason="default model not built (make default-model)"
)

pytestmark = needs_artifact


def test_sha256_matches_manifest_and_size_is_bounded() -> None:
    manifest = verify_artifact(ARTIFACT)
    assert sha256_file(ARTIFACT / MODEL_FILE) == manifest.sha256
    size = sum(p.stat().st_size for p in ARTIFACT.rglob("*") if p.is_file())
    assert size <= MAX_BYTES, f"artifact is {size / 2**20:.1f} MiB"


def test_manifest_records_recipe_and_test_metrics() -> None:
    manifest = read_manifest(ARTIFACT)
    recipe = manifest.extra["default_model"]
    assert recipe["command"] == "make default-model"
    steps = " ".join(recipe["steps"])
    for command in ("synth-speech-commands", "train", "evaluate", "export"):
        assert f"arinext {command} " in steps
    data = recipe["data_recipe"]
    assert data["seed"] == recipe["seed"]
    assert set(data["voices"]["test"]).isdisjoint(data["voices"]["train"])
    assert manifest.metrics["test"]["top1"] >= 0.95


def _fresh_utterances() -> list[tuple[str, bytes]]:
    """(word, wav bytes) pairs in held-out voices, rendered by the dataset's own pipeline."""
    sf = pytest.importorskip("soundfile")
    manifest = read_manifest(ARTIFACT)
    data = manifest.extra["default_model"]["data_recipe"]
    words = manifest.heads[0].labels
    voices = data["voices"]["test"]
    recipe = Recipe(
        seed=FRESH_SEED,
        words=tuple(words),
        accents=tuple(data["accents"]),
        snr_db=(15.0, 35.0),
        voices={"test": voices},
    )
    rng = np.random.default_rng(FRESH_SEED)
    out = []
    for k in range(FRESH_UTTERANCES):
        item = Item(str(rng.choice(words)), voices[k % len(voices)], k, "test")
        buffer = io.BytesIO()
        sf.write(buffer, render_item(item, recipe), 16000, format="WAV", subtype="PCM_16")
        out.append((item.word, buffer.getvalue()))
    return out


@pytest.mark.system
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_fresh_held_out_voices_are_recognised_over_http(tmp_path: Path) -> None:
    utterances = _fresh_utterances()
    command = [sys.executable, "-m", "arinext", "serve", "--models", str(ARTIFACT)]
    command.append("--no-demo")
    with (
        run_server(tmp_path, command) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        correct = []
        for word, wav in utterances:
            answer = client.post(
                "/classify", content=wav, headers={"content-type": "audio/wav"}, params={"top_k": 1}
            )
            assert answer.status_code == 200, answer.text
            predicted = answer.json()["predictions"][0]["top_k"][0]["label"]
            correct.append(predicted == word)
    accuracy = sum(correct) / len(correct)
    assert accuracy >= 0.9, f"{sum(correct)}/{len(correct)} fresh utterances recognised"
