"""The espeak-ng dataset generator: layout, audio format, voice-disjoint splits, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arinext.training.synth_speech import (
    UNKNOWN,
    Item,
    Recipe,
    espeak_available,
    list_variants,
    read_recipe,
    render_item,
    split_variants,
    spoken_text,
    synthesize_dataset,
    voice_hash,
)
from tests.fresh_imports import heavy_imports

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

sf = pytest.importorskip("soundfile")

WORDS = ["yes", "no", "backward"]
VARIANTS = ["plain", "f3", "m1", "Storm", "whisper", "croak"]


def _make(root: Path, workers: int = 2) -> None:
    synthesize_dataset(
        root,
        seed=7,
        per_voice=2,
        words=WORDS,
        variants=VARIANTS,
        workers=workers,
    )


def test_module_does_not_import_torch() -> None:
    # ``arinext`` registers this sub-command in the torch-free serving image too.
    assert heavy_imports("import arinext.training.synth_speech", ("torch",)) == []


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    _make(root)
    return root


def _wavs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.wav"))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.system
@needs_espeak
def test_layout_is_speech_commands_v2(dataset: Path) -> None:
    wavs = _wavs(dataset)
    assert len(wavs) == len(WORDS) * len(VARIANTS) * 2
    assert sorted(p.name for p in dataset.iterdir() if p.is_dir()) == sorted(WORDS)
    for rel in wavs:
        word, name = rel.split("/")
        assert word in WORDS
        speaker, tag, k = name.removesuffix(".wav").split("_")
        assert tag == "nohash" and len(speaker) == 8 and k in ("0", "1")
    listed = _lines(dataset / "validation_list.txt") + _lines(dataset / "testing_list.txt")
    assert listed and set(listed) <= set(wavs)


@pytest.mark.system
@needs_espeak
def test_audio_is_one_second_16k_mono_int16(dataset: Path) -> None:
    for rel in _wavs(dataset):
        info = sf.info(dataset / rel)
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 16000)
        assert info.subtype == "PCM_16"
        samples, _ = sf.read(dataset / rel, dtype="float32")
        assert 0.02 < np.abs(samples).max() <= 1.0, rel


@pytest.mark.system
@needs_espeak
def test_splits_are_disjoint_by_voice(dataset: Path) -> None:
    def speakers(names: list[str]) -> set[str]:
        return {name.split("/")[1].split("_")[0] for name in names}

    val = speakers(_lines(dataset / "validation_list.txt"))
    test = speakers(_lines(dataset / "testing_list.txt"))
    train = speakers(_wavs(dataset)) - val - test
    assert val and test and train
    assert not val & test

    recipe = json.loads((dataset / "recipe.json").read_text())
    voices = recipe["voices"]
    assert {voice_hash(v) for v in voices["validation"]} == val
    assert {voice_hash(v) for v in voices["test"]} == test
    assert {voice_hash(v) for v in voices["train"]} == train
    everyone = voices["train"] + voices["validation"] + voices["test"]
    assert sorted(everyone) == sorted(VARIANTS)
    assert recipe["seed"] == 7 and recipe["espeak_ng"].startswith("eSpeak NG")


@pytest.mark.system
@needs_espeak
def test_same_seed_gives_identical_bytes(dataset: Path, tmp_path: Path) -> None:
    _make(tmp_path, workers=1)  # another worker count must not matter either
    assert _wavs(tmp_path) == _wavs(dataset)
    for rel in _wavs(dataset):
        assert (tmp_path / rel).read_bytes() == (dataset / rel).read_bytes(), rel
    for name in ("validation_list.txt", "testing_list.txt", "recipe.json"):
        assert (tmp_path / name).read_bytes() == (dataset / name).read_bytes()


@pytest.mark.system
@needs_espeak
def test_split_depends_on_seed_only() -> None:
    variants = list_variants()
    assert "plain" in variants and len(variants) > 30
    split = split_variants(variants, seed=0)
    assert split == split_variants(list(reversed(variants)), seed=0)
    held_out = set(split["validation"]) | set(split["test"])
    assert not held_out & set(split["train"])
    assert len(split["test"]) >= 0.08 * len(variants)


def test_spoken_text_is_what_render_item_says(monkeypatch: pytest.MonkeyPatch) -> None:
    from arinext.training import synth_speech
    from arinext.training.vocabulary import TRAIN_WORDS

    said: list[str] = []

    def fake_espeak(text: str, *args: object) -> np.ndarray:
        said.append(text)
        return np.full(4000, 0.1, dtype=np.float32)

    monkeypatch.setattr(synth_speech, "synthesize", fake_espeak)
    recipe = Recipe(seed=3, words=("yes",), voices={"test": ["plain"]}, unknown_per_voice=40)
    items = [Item(UNKNOWN, "plain", k, "test") for k in range(40)] + [
        Item("yes", "plain", 0, "test")
    ]
    texts = [spoken_text(item, recipe) for item in items]
    for item in items:
        render_item(item, recipe)
    assert said == texts
    assert texts[-1] == "yes"
    # Single vocabulary entries and runs of two or three of them.
    assert any(text in TRAIN_WORDS for text in texts[:-1])
    assert any(text not in TRAIN_WORDS and " " in text for text in texts[:-1])


@pytest.mark.system
@needs_espeak
def test_read_recipe_gives_back_the_recipe_a_dataset_was_made_with(tmp_path: Path) -> None:
    made = synthesize_dataset(
        tmp_path, seed=5, per_voice=1, words=["yes"], variants=VARIANTS, unknown_per_voice=1
    )
    assert read_recipe(tmp_path) == made
