"""The shipped default model (``make default-model``): integrity, recorded recipe, and real use.

The end-to-end tests go through a real ``arinext serve`` process, the way a user's first
requests would: fresh utterances (words, other speech, non-speech) in espeak-ng voices that the
training split never had, rendered with a seed the dataset did not use; and a ten-second
recording with three keywords between other speech and silence, scanned with ``hop=0.25``.
"""

from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from arinext.model.labels import NOT_KEYWORDS, SILENCE, UNKNOWN, is_keyword
from arinext.model.manifest import (
    MODEL_FILE,
    Manifest,
    read_manifest,
    sha256_file,
    verify_artifact,
)
from arinext.training.synth_speech import Item, Recipe, espeak_available, render_item
from arinext.training.vocabulary import HELD_OUT_WORDS
from tests.service.conftest import REPO, ServerProcess, run_server
from tests.service.speech import keyword_recording

# The model served by default (int8) and the fp32 export it was quantised from.
ARTIFACT = REPO / "artifacts" / "speech-commands-b0-int8"
FP32_ARTIFACT = REPO / "artifacts" / "speech-commands-b0"
MAX_BYTES = 15 * 1024 * 1024
FRESH_SEED = 20_260_101  # not the dataset's seed: these exact utterances were never rendered
FRESH_WORDS = 24
FRESH_OTHER = 8  # _unknown_ (words the training vocabulary never had) and _silence_ clips
# Bars just under what `make default-model` measured on the shipped artifact (the figures and the
# issue's targets are in docs/default-model.md): the test split (held-out espeak-ng voices and
# recorded speakers), the recorded speakers alone, and fresh utterances of held-out voices.
HELD_OUT_TOP1 = 0.82
RECORDED_TOP1 = 0.85
RECORDED_CORE_TOP1 = 0.87
RECORDED_TELEPHONE_TOP1 = 0.81
FRESH_TOP1 = 0.68

needs_artifact = pytest.mark.skipif(
    not (ARTIFACT / MODEL_FILE).is_file(), reason="default model not built (make default-model)"
)
needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

pytestmark = needs_artifact


@pytest.mark.parametrize("artifact", [ARTIFACT, FP32_ARTIFACT], ids=["int8", "fp32"])
def test_sha256_matches_manifest_and_size_is_bounded(artifact: Path) -> None:
    manifest = verify_artifact(artifact)
    assert sha256_file(artifact / MODEL_FILE) == manifest.sha256
    size = sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file())
    assert size <= MAX_BYTES, f"artifact is {size / 2**20:.1f} MiB"


def test_the_served_model_is_the_int8_version_of_the_shipped_fp32_export() -> None:
    from arinext.service.settings import EMBEDDED_FP32_MODEL_DIR, EMBEDDED_MODEL_DIR

    assert EMBEDDED_MODEL_DIR.resolve() == ARTIFACT
    assert EMBEDDED_FP32_MODEL_DIR.resolve() == FP32_ARTIFACT
    served, fp32 = read_manifest(ARTIFACT), read_manifest(FP32_ARTIFACT)
    assert served.precision == "int8" and fp32.precision == "fp32"
    assert served.quantization is not None
    assert served.quantization.source_sha256 == fp32.sha256  # not an older model's int8
    assert served.quantization.top1_agreement >= served.quantization.min_agreement
    assert served.name == fp32.name  # clients name the same model either way
    # Both measured the same way; int8 within half a point of fp32 wherever make
    # quantize-default judges: recorded speech, the test split, flite/Festival pooled.
    for condition in ("clean", "telephone"):
        int8_top1 = served.metrics["recorded_speech"][condition]["keyword_top1"]
        assert int8_top1 >= fp32.metrics["recorded_speech"][condition]["keyword_top1"] - 0.005
    assert served.metrics["test"]["top1"] >= fp32.metrics["test"]["top1"] - 0.005

    def pooled(manifest: Manifest) -> float:  # the conditions hold the same clips each
        return float(np.mean([c["keyword_top1"] for c in manifest.metrics["ood"].values()]))

    assert pooled(served) >= pooled(fp32) - 0.005


def test_labels_are_the_35_words_unknown_and_silence() -> None:
    labels = read_manifest(ARTIFACT).heads[0].labels
    assert len(labels) == 37 and labels[-2:] == [UNKNOWN, SILENCE]
    assert sum(is_keyword(label) for label in labels) == 35


@pytest.mark.parametrize("artifact", [ARTIFACT, FP32_ARTIFACT], ids=["int8", "fp32"])
def test_manifest_records_recipe_and_measurements(artifact: Path) -> None:
    manifest = read_manifest(artifact)
    recipe = manifest.extra["default_model"]
    assert recipe["command"] == "make default-model"
    steps = " ".join(recipe["steps"])
    for command in ("synth-speech-commands", "train", "evaluate", "export"):
        assert f"arinext {command} " in steps
    assert "--ood" in steps
    data = recipe["data_recipe"]
    assert data["seed"] == recipe["seed"]
    assert set(data["voices"]["test"]).isdisjoint(data["voices"]["train"])
    assert data["unknown_per_voice"] > 0 and data["silence"] > 0
    # Measured on the shipped artifact: held-out espeak-ng voices and the out-of-domain set.
    assert manifest.metrics["test"]["top1"] >= HELD_OUT_TOP1
    ood = manifest.metrics["ood"]
    assert set(ood) == {"clean", "noise_10db", "reverb_0.5s", "telephone", "quiet_-30db"}
    for condition, summary in ood.items():
        assert 0.0 <= summary["keyword_top1"] <= 1.0, condition
        assert 0.0 <= summary["false_alarm_rate"] <= 1.0, condition
    assert set(recipe["ood"]["clean"]["per_voice"]) >= {"flite:slt", "festival:kal_diphone"}
    # Held-out recorded speakers, clean and through a telephone line, with the data's credit.
    assert "--recordings" in steps and "data.recordings=" in steps
    recorded = manifest.metrics["recorded_speech"]
    assert set(recorded) == {"clean", "telephone"}
    assert recorded["clean"]["keyword_top1"] >= RECORDED_TOP1
    assert recorded["clean"]["core_top1"] >= RECORDED_CORE_TOP1
    assert recorded["telephone"]["keyword_top1"] >= RECORDED_TELEPHONE_TOP1
    credit = recipe["recorded_speech"]["attribution"]
    assert "Warden 2018" in credit and "CC BY 4.0" in credit and "not comparable" in credit
    per_word = recipe["recorded_speech"]["conditions"]["clean"]["per_keyword"]
    assert {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"} <= set(per_word)


def _wav(samples: np.ndarray) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _fresh_utterances() -> list[tuple[str, bytes]]:
    """(label, wav bytes) in held-out voices, rendered by the dataset's own pipeline."""
    manifest = read_manifest(ARTIFACT)
    data = manifest.extra["default_model"]["data_recipe"]
    words = [label for label in manifest.heads[0].labels if is_keyword(label)]
    voices = data["voices"]["test"]
    recipe = Recipe(
        seed=FRESH_SEED,
        words=tuple(words),
        accents=tuple(data["accents"]),
        snr_db=(15.0, 35.0),
        voices={"test": voices},
        unknown_words=HELD_OUT_WORDS,
    )
    rng = np.random.default_rng(FRESH_SEED)
    items = [
        Item(str(rng.choice(words)), voices[k % len(voices)], k, "test") for k in range(FRESH_WORDS)
    ]
    items += [Item(UNKNOWN, voices[k % len(voices)], k, "test") for k in range(FRESH_OTHER // 2)]
    items += [Item(SILENCE, "nonspeech", k, "test") for k in range(FRESH_OTHER // 2)]
    return [(item.word, _wav(render_item(item, recipe))) for item in items]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    command = [sys.executable, "-m", "arinext", "serve", "--models", str(ARTIFACT), "--no-demo"]
    with run_server(tmp_path_factory.mktemp("default-model"), command) as process:
        yield process


def _top(client: httpx.Client, wav: bytes, **params: object) -> dict:
    answer = client.post(
        "/classify", content=wav, headers={"content-type": "audio/wav"}, params=params
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"][0]


@pytest.mark.system
@needs_espeak
def test_fresh_held_out_voices_are_recognised_over_http(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        answers = [
            (label, _top(client, wav, top_k=1)["top_k"][0]["label"])
            for label, wav in _fresh_utterances()
        ]
    correct = [label == predicted for label, predicted in answers]
    # The measured count is in docs/default-model.md; the bar guards against regressions.
    assert sum(correct) / len(correct) >= FRESH_TOP1, answers
    # Non-speech never comes back as a keyword. (Other words still do at times: the README's
    # false-alarm figures.)
    for label, predicted in answers:
        if label == SILENCE:
            assert predicted in NOT_KEYWORDS, (label, predicted)


@pytest.mark.system
@needs_espeak
def test_ten_second_recording_scanned_with_a_hop(server: ServerProcess) -> None:
    recording = keyword_recording()
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        head = _top(client, recording.wav_bytes(), hop=0.25, windows="true", top_k=3)
    windows = head["windows"]
    assert len(windows) >= 33  # (10 s - 1 s) / 0.25 s + 1
    starts = [w["start"] for w in windows]
    # Every 0.25 s on the model's 20 ms frame grid: steps of 0.26 and 0.24 s in turn.
    assert starts == sorted(starts) and starts[2] - starts[0] == pytest.approx(0.5)
    steps = [b - a for a, b in itertools.pairwise(starts[:-1])]  # the last window ends the clip
    assert all(abs(step - 0.25) <= 0.01 + 1e-9 for step in steps)

    def overlaps(window: dict, start: float, end: float) -> bool:
        return window["start"] < end and window["end"] > start

    for keyword in recording.keywords:
        tops = [w["top_k"][0]["label"] for w in windows if overlaps(w, keyword.start, keyword.end)]
        assert keyword.text in tops, (keyword, tops)
    # Windows that hear no speech at all answer _silence_. (Windows that cut other speech at an
    # edge still answer a keyword at times: the README lists it as a known miss.)
    quiet = [w for w in windows if not any(overlaps(w, s.start, s.end) for s in recording.segments)]
    assert len(quiet) >= 4
    for window in quiet:
        assert window["top_k"][0]["label"] == SILENCE, (window["start"], window["top_k"])
