"""Recorded speech in the Speech Commands layout: split by speaker, read in place, evaluated.

The recordings are generated here (FLAC, as ``../shared/speech_commands_subset`` holds them):
tests never need the shared folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from arinext.training.datasets import read_split
from arinext.training.datasets.base import DatasetError
from arinext.training.datasets.recordings import (
    NOISE_TRAIN_FRACTION,
    RecordingsMissingError,
    list_recordings,
    require_recordings,
    speaker_of,
    split_of,
)
from tests.training.conftest import SOUNDS, make_speech_commands, run_cli, tiny_overrides

RATE = 16000


def _speakers(count: int) -> list[str]:
    """Eight-hex-digit ids covering every split (chosen by the split function itself)."""
    ids = [f"{k:08x}" for k in range(count)]
    assert {split_of(s) for s in ids} == {"train", "validation", "test"}
    return ids


def make_recordings(root: Path, *, speakers: int = 40, seed: int = 0) -> Path:
    """Three separable 'words' said by ``speakers`` people, room noise and a background."""
    rng = np.random.default_rng(seed)
    for speaker in _speakers(speakers):
        for word, make in SOUNDS.items():
            for n in range(2):
                path = root / word / f"{speaker}_nohash_{n}.flac"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, make(rng, RATE, RATE), RATE, format="FLAC")
    for k in range(10):
        path = root / "_silence_" / f"{k:04d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, rng.normal(0, 0.01, RATE), RATE, format="FLAC")
    background = root / "_background_noise_" / "tap.flac"
    background.parent.mkdir(parents=True, exist_ok=True)
    sf.write(background, rng.normal(0, 0.05, 10 * RATE), RATE, format="FLAC")
    return root


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_recordings(tmp_path_factory.mktemp("recordings"))


def test_a_speaker_is_in_one_split_only(recordings: Path) -> None:
    splits: dict[str, set[str]] = defaultdict(set)
    for clip in list_recordings(recordings):
        if clip.word != "_silence_":
            splits[clip.speaker].add(split_of(clip.speaker))
    assert all(len(found) == 1 for found in splits.values())
    assert speaker_of(Path("yes/0a1b2c3d_nohash_4.flac")) == "0a1b2c3d"
    # The split is a function of the speaker alone: about 70 / 10 / 20 % of many speakers.
    many = [split_of(f"{k:08x}") for k in range(5000)]
    shares = {s: many.count(s) / len(many) for s in ("train", "validation", "test")}
    assert shares["train"] == pytest.approx(0.7, abs=0.03)
    assert shares["validation"] == pytest.approx(0.1, abs=0.02)
    assert shares["test"] == pytest.approx(0.2, abs=0.02)


def test_reader_adds_recordings_by_speaker_and_repeats_training_clips(recordings: Path) -> None:
    options = {"extra_classes": True, "recordings": str(recordings), "recordings_only": True}
    train = read_split("speech_commands", recordings, "train", {**options, "recordings_repeat": 3})
    test = read_split("speech_commands", recordings, "test", options)
    train_files = {c.path for c in train.clips}
    test_files = {c.path for c in test.clips if c.start is None}
    assert train_files.isdisjoint(test_files)
    # Three views of every training recording, one of every test recording.
    counts = defaultdict(int)
    for clip in train.clips:
        counts[clip.path] += 1
    assert set(counts.values()) == {3}
    assert len(test.clips) == len(test_files) + sum(1 for c in test.clips if c.start is not None)
    names = train.heads["speech_commands"]
    by_word = {names[c.labels[0]] for c in train.clips}
    assert {"yes", "no", "up", "_silence_"} <= by_word


def test_withheld_words_leave_every_split_and_keep_their_class(
    recordings: Path, tmp_path: Path
) -> None:
    synthesised = make_speech_commands(tmp_path / "synth")
    options = {"extra_classes": True, "recordings": str(recordings), "withhold_words": ["up"]}
    for split in ("train", "validation", "test"):
        index = read_split("speech_commands", synthesised, split, options)
        names = index.heads["speech_commands"]
        words = {names[c.labels[0]] for c in index.clips if c.labels}
        assert "up" not in words and {"yes", "no"} <= words
        assert "up" in names
    with pytest.raises(DatasetError, match="not Speech Commands words"):
        read_split("speech_commands", synthesised, "train", {**options, "withhold_words": ["xyz"]})


def test_background_noise_trains_on_its_first_part_and_tests_on_the_rest(
    recordings: Path,
) -> None:
    options = {"extra_classes": True, "recordings": str(recordings), "recordings_only": True}
    train = read_split("speech_commands", recordings, "train", options)
    test = read_split("speech_commands", recordings, "test", options)
    cut = int(10 * RATE * NOISE_TRAIN_FRACTION)
    assert [(c.start, c.stop) for c in train.noise] == [(0, cut)]
    windows = [c for c in test.clips if c.start is not None]
    assert windows and all(c.start >= cut and c.stop - c.start == RATE for c in windows)
    names = test.heads["speech_commands"]
    assert {names[c.labels[0]] for c in windows} == {"_silence_"}
    assert not read_split("speech_commands", recordings, "validation", options).noise


def test_missing_folder_says_where_to_get_speech_commands(tmp_path: Path) -> None:
    with pytest.raises(RecordingsMissingError, match="Speech Commands"):
        require_recordings(tmp_path / "absent")
    (tmp_path / "empty" / "yes").mkdir(parents=True)
    with pytest.raises(RecordingsMissingError, match="no <word>"):
        require_recordings(tmp_path / "empty")
    done = subprocess.run(
        [sys.executable, "-m", "arinext.training.datasets.recordings", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "speech_commands_v0.02" in done.stderr


@pytest.mark.slow
def test_train_on_recordings_then_evaluate_held_out_speakers(
    recordings: Path, tmp_path: Path
) -> None:
    """The recipe's path end to end on miniature data: a run trained on recordings alone (with
    the waveform chain and the recorded noise pool), exported, then `evaluate --recordings`."""
    run = tmp_path / "run"
    sets = tiny_overrides(
        **{
            "data.extra_classes": "true",
            "data.recordings": str(recordings),
            "data.recordings_only": "true",
            "data.recordings_repeat": 2,
            "augment.waveform": "true",
            "augment.rooms": 2,
        }
    )
    code = run_cli(
        "train", "--preset", "finetune-speech-commands", "--data-root", recordings,
        "--out", run, "--epochs", 6, "--batch-size", 16, "--lr", 0.02, "--set", *sets,
    )  # fmt: skip
    assert code == 0
    artifact = tmp_path / "artifact"
    assert run_cli("export", run, "--out", artifact) == 0
    report_path = tmp_path / "recorded.json"
    code = run_cli(
        "evaluate", artifact, "--recordings", recordings, "--output", report_path,
        "--set", "num_workers=0",
    )  # fmt: skip
    assert code == 0
    report = json.loads(report_path.read_text())
    assert set(report["conditions"]) == {"clean", "telephone"}
    clean = report["summary"]["clean"]
    test_words = [c for c in list_recordings(recordings, "test") if c.word != "_silence_"]
    assert clean["keyword_clips"] == len(test_words)
    # Tones, noise bursts and chirps are separable: the held-out speakers' clips are learnt.
    assert clean["keyword_top1"] >= 0.8
    assert clean["core_top1"] == clean["keyword_top1"]  # yes, no and up are core words
    assert clean["false_accepts_room_noise"] is not None
    per_word = report["conditions"]["clean"]["keywords"]["per_keyword"]
    assert set(per_word) == {"yes", "no", "up"}
