"""Each reader on a generated miniature of its dataset's official layout (and the pickle form)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from arinext.model.audio_config import get_preset
from arinext.model.labels import load_labels
from arinext.training.config import AugmentConfig
from arinext.training.datasets import ClipDataset, DatasetError, read_split
from arinext.training.datasets.base import collate_eval
from arinext.training.datasets.epic_kitchens import timestamp_seconds
from tests.training.conftest import make_speech_commands, write_wav

RNG = np.random.default_rng(0)


def _noise(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    shape = (int(seconds * rate),) if channels == 1 else (int(seconds * rate), channels)
    return RNG.normal(0, 0.1, shape)


def _labels_of(index, head: str) -> list[str]:
    return [index.heads[head][clip.labels[0]] for clip in index.clips]


# --- Speech Commands v2 -------------------------------------------------------------------


def test_speech_commands_splits_and_labels(tmp_path: Path) -> None:
    root = make_speech_commands(tmp_path, per_word=(3, 2, 1))
    names = load_labels("speech_commands_v2")
    counts = {
        s: len(read_split("speech_commands", root, s, {}).clips)
        for s in ("train", "validation", "test")
    }
    assert counts == {"train": 9, "validation": 6, "test": 3}
    train = read_split("speech_commands", root, "train", {})
    assert train.heads == {"speech_commands": names}
    assert sorted(set(_labels_of(train, "speech_commands"))) == ["no", "up", "yes"]
    for clip in train.clips:
        assert Path(clip.path).parent.name == names[clip.labels[0]]
        assert "_background_noise_" not in clip.path
    validation = {
        f"{Path(c.path).parent.name}/{Path(c.path).name}"
        for c in read_split("speech_commands", root, "validation", {}).clips
    }
    listed = set((root / "validation_list.txt").read_text().split())
    assert validation == listed


def test_speech_commands_pickles(tmp_path: Path) -> None:
    root = make_speech_commands(tmp_path / "data", per_word=(2, 1, 1))
    names = load_labels("speech_commands_v2")
    notes = tmp_path / "annotations"
    notes.mkdir()
    rows = [
        {"video": wav.name, "class": wav.parent.name, "class_id": names.index(wav.parent.name)}
        for wav in sorted(root.glob("[!_]*/*.wav"))
    ]
    pd.DataFrame(rows[:4]).to_pickle(notes / "SPEECH_CMD_V2_train.pkl")
    index = read_split("speech_commands", root, "train", {"annotations_dir": str(notes)})
    assert len(index.clips) == 4
    assert [Path(c.path).name for c in index.clips] == [r["video"] for r in rows[:4]]
    assert all(Path(c.path).is_file() for c in index.clips)


# --- VGG-Sound ----------------------------------------------------------------------------


def _vggsound(root: Path) -> list[tuple[str, int, str, str]]:
    rows = [
        ("---g-f_I2yQ", 1, "people marching", "train"),
        ("--0PQM4-hqg", 30, "waterfall burbling", "train"),
        ("-0BIyqJj9ZU", 30, "bird chirping, tweeting", "train"),
        ("-1pRmoJIGQc", 10, "waterfall burbling", "test"),
        ("-2a0uY9Mc6U", 210, "ambulance siren", "test"),
        ("-missing000", 0, "ambulance siren", "train"),  # never downloaded
    ]
    with (root / "vggsound.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    for k, (ytid, start, _, split) in enumerate(rows[:-1]):
        # Both naming conventions, in per-split sub-folders.
        stem = f"{ytid}_{start:06d}" if k % 2 == 0 else f"{ytid}_{start}"
        write_wav(root / "audio" / split / f"{stem}.wav", _noise(0.2, 16000), 16000)
    return rows


def test_vggsound_csv(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _vggsound(tmp_path)
    names = load_labels("vggsound")
    with caplog.at_level(logging.WARNING):
        train = read_split("vggsound", tmp_path, "train", {})
    assert "1 annotated clips have no audio" in caplog.text
    test = read_split("vggsound", tmp_path, "test", {})
    assert len(train.clips) == 3 and len(test.clips) == 2
    assert _labels_of(train, "vggsound") == [r[2] for r in rows[:3]]
    assert _labels_of(test, "vggsound") == [r[2] for r in rows[3:5]]
    assert train.heads == {"vggsound": names}
    with pytest.raises(DatasetError, match="train and test"):
        read_split("vggsound", tmp_path, "validation", {})


def test_vggsound_pickles(tmp_path: Path) -> None:
    rows = _vggsound(tmp_path)
    names = load_labels("vggsound")
    notes = tmp_path / "annotations"
    notes.mkdir()
    table = pd.DataFrame(
        {
            "video": [f"{ytid}_{start:06d}" for ytid, start, _, _ in rows[3:5]],
            "class": [r[2] for r in rows[3:5]],
            "class_id": [names.index(r[2]) for r in rows[3:5]],
        }
    )
    table.to_pickle(notes / "test.pkl")
    index = read_split("vggsound", tmp_path, "test", {"annotations_dir": str(notes)})
    assert _labels_of(index, "vggsound") == [r[2] for r in rows[3:5]]


# --- EPIC (HDF5) ---------------------------------------------------------------------------


def _epic_audio(root: Path, rate: int = 24000) -> dict[str, np.ndarray]:
    recordings = {
        "P01_01": _noise(6, rate).astype(np.float32),
        "P30_05": _noise(4, rate).astype(np.float32),
    }
    with h5py.File(root / "EPIC-KITCHENS-100_audio.hdf5", "w") as fh:
        for key, samples in recordings.items():
            fh.create_dataset(key, data=samples)
    return recordings


def _epic_sounds_table(split: str) -> pd.DataFrame:
    rows = [
        ("P01_01", 0, 48000, "rustle", 4),
        ("P01_01", 24000, 30000, "water", 5),
        ("P30_05", 1000, 90000, "cut / chop", 2),
    ]
    if split == "validation":
        rows = rows[:1]
    return pd.DataFrame(
        [
            {
                "annotation_id": f"{video}_{k}",
                "participant_id": video[:3],
                "video_id": video,
                "start_timestamp": "00:00:00.000",
                "stop_timestamp": "00:00:01.000",
                "start_sample": start,
                "stop_sample": stop,
                "description": "generated",
                "class": name,
                "class_id": class_id,
            }
            for k, (video, start, stop, name, class_id) in enumerate(rows)
        ]
    )


@pytest.mark.parametrize("form", ["csv", "pickle"])
def test_epic_sounds(tmp_path: Path, form: str) -> None:
    recordings = _epic_audio(tmp_path)
    for split in ("train", "validation"):
        table = _epic_sounds_table(split)
        if form == "csv":
            table.to_csv(tmp_path / f"EPIC_Sounds_{split}.csv", index=False)
        else:
            table.to_pickle(tmp_path / f"EPIC_Sounds_{split}.pkl")
    train = read_split("epic_sounds", tmp_path, "train", {})
    validation = read_split("epic_sounds", tmp_path, "validation", {})
    assert len(train.clips) == 3 and len(validation.clips) == 1
    assert _labels_of(train, "epic_sounds") == ["rustle", "water", "cut / chop"]
    assert train.heads == {"epic_sounds": load_labels("epic_sounds")}
    dataset = ClipDataset(train, get_preset("epic_sounds"), "eval")
    np.testing.assert_array_equal(dataset.waveform(1), recordings["P01_01"][24000:30000])


def _epic_100(root: Path) -> None:
    pd.DataFrame({"id": range(97), "key": [f"verb{i}" for i in range(97)]}).to_csv(
        root / "EPIC_100_verb_classes.csv", index=False
    )
    pd.DataFrame({"id": range(300), "key": [f"noun{i}" for i in range(300)]}).to_csv(
        root / "EPIC_100_noun_classes.csv", index=False
    )
    pd.DataFrame({"participant_id": ["P30"]}).to_csv(
        root / "EPIC_100_unseen_participant_ids_validation.csv", index=False
    )
    rows = {
        "train": [("P01", "P01_01", "00:00:00.50", "00:00:02.00", 3, 7)],
        "validation": [
            ("P01", "P01_01", "00:00:01.00", "00:00:03.25", 1, 299),
            ("P30", "P30_05", "00:00:00.00", "00:00:01.10", 96, 0),
        ],
    }
    for split, items in rows.items():
        pd.DataFrame(
            [
                {
                    "narration_id": f"{video}_{k}",
                    "participant_id": participant,
                    "video_id": video,
                    "narration_timestamp": start,
                    "start_timestamp": start,
                    "stop_timestamp": stop,
                    "start_frame": 0,
                    "stop_frame": 1,
                    "narration": "x",
                    "verb": "v",
                    "verb_class": verb,
                    "noun": "n",
                    "noun_class": noun,
                    "all_nouns": "[]",
                    "all_noun_classes": "[]",
                }
                for k, (participant, video, start, stop, verb, noun) in enumerate(items)
            ]
        ).to_csv(root / f"EPIC_100_{split}.csv", index=False)


def test_epic_kitchens_100(tmp_path: Path) -> None:
    _epic_audio(tmp_path)
    _epic_100(tmp_path)
    train = read_split("epic_kitchens_100", tmp_path, "train", {})
    validation = read_split("epic_kitchens_100", tmp_path, "validation", {})
    assert len(train.clips) == 1 and len(validation.clips) == 2
    assert list(validation.heads) == ["verb", "noun"]
    assert len(validation.heads["verb"]) == 97 and len(validation.heads["noun"]) == 300
    assert validation.heads["verb"][96] == "verb96" and validation.heads["noun"][299] == "noun299"
    assert [c.labels for c in validation.clips] == [(1, 299), (96, 0)]
    assert validation.subsets == {"unseen": [1]}
    first = validation.clips[0]
    assert (first.key, first.start, first.stop) == ("P01_01", 24000, 78000)
    assert timestamp_seconds("01:02:03.50") == pytest.approx(3723.5)


# --- UrbanSound8K ---------------------------------------------------------------------------


def _urbansound(root: Path) -> pd.DataFrame:
    names = load_labels("urbansound8k")
    rows = []
    for fold in (1, 2, 3):
        for class_id in (0, 3, 9):
            name = f"{100 + class_id}-{class_id}-0-{fold}.wav"
            # Real slices come at various rates and channel counts.
            rate, channels = (44100, 2) if class_id == 3 else (22050, 1)
            write_wav(root / "audio" / f"fold{fold}" / name, _noise(0.3, rate, channels), rate)
            rows.append(
                {
                    "slice_file_name": name,
                    "fsID": 100 + class_id,
                    "start": 0.0,
                    "end": 0.3,
                    "salience": 1,
                    "fold": fold,
                    "classID": class_id,
                    "class": names[class_id],
                }
            )
    table = pd.DataFrame(rows)
    (root / "metadata").mkdir()
    table.to_csv(root / "metadata" / "UrbanSound8K.csv", index=False)
    return table


def test_urbansound8k_folds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _urbansound(tmp_path)
    train = read_split("urbansound8k", tmp_path, "train", {"fold": 2})
    validation = read_split("urbansound8k", tmp_path, "validation", {"fold": 2})
    assert len(train.clips) == 6 and len(validation.clips) == 3
    assert all("/fold2/" in c.path for c in validation.clips)
    assert not any("/fold2/" in c.path for c in train.clips)
    assert _labels_of(validation, "urbansound8k") == ["air_conditioner", "dog_bark", "street_music"]
    dataset = ClipDataset(validation, get_preset("urbansound8k"), "eval")
    with caplog.at_level(logging.INFO, logger="arinext.training.datasets.base"):
        lengths = [len(dataset.waveform(i)) for i in range(len(dataset))]
    assert lengths == [4800, 4800, 4800]  # 0.3 s at 16 kHz, from 22.05 and 44.1 kHz
    assert caplog.text.count("resampling") == 1  # logged once per dataset
    with pytest.raises(DatasetError, match="fold"):
        read_split("urbansound8k", tmp_path, "train", {"fold": 11})


def test_urbansound8k_pickles(tmp_path: Path) -> None:
    table = _urbansound(tmp_path)
    notes = tmp_path / "annotations" / "UrbanSound8K_valid_10fold"
    notes.mkdir(parents=True)
    held = table[table["fold"] == 3]
    pd.DataFrame(
        {"video": held["slice_file_name"], "fold": held["fold"], "class_id": held["classID"]}
    ).to_pickle(notes / "UrbanSound8K_valid_fold3.pkl")
    index = read_split(
        "urbansound8k", tmp_path, "test", {"fold": 3, "annotations_dir": str(notes.parent)}
    )
    assert len(index.clips) == 3 and all(Path(c.path).is_file() for c in index.clips)


# --- NSynth ---------------------------------------------------------------------------------


def _nsynth(root: Path) -> dict[str, dict[str, int]]:
    layout = {
        "train": {"bass_synthetic_033-022-050": 0, "guitar_acoustic_010-060-100": 3},
        "valid": {"vocal_synthetic_003-070-127": 10},
        "test": {"organ_electronic_001-050-075": 6, "flute_acoustic_002-077-100": 2},
    }
    for folder, notes in layout.items():
        base = root / f"nsynth-{folder}"
        meta = {
            note: {"note_str": note, "instrument_family": family, "pitch": 60}
            for note, family in notes.items()
        }
        base.mkdir(parents=True)
        (base / "examples.json").write_text(json.dumps(meta))
        for note in notes:
            write_wav(base / "audio" / f"{note}.wav", _noise(0.2, 16000), 16000)
    return layout


def test_nsynth(tmp_path: Path) -> None:
    _nsynth(tmp_path)
    counts = {
        s: len(read_split("nsynth", tmp_path, s, {}).clips) for s in ("train", "validation", "test")
    }
    assert counts == {"train": 2, "validation": 1, "test": 2}
    test = read_split("nsynth", tmp_path, "test", {})
    assert sorted(_labels_of(test, "nsynth")) == ["flute", "organ"]
    assert read_split("nsynth", tmp_path, "validation", {}).clips[0].labels == (10,)
    assert all(Path(c.path).is_file() for c in test.clips)


def test_nsynth_pickles(tmp_path: Path) -> None:
    layout = _nsynth(tmp_path)
    notes = tmp_path / "annotations"
    notes.mkdir()
    pd.DataFrame(
        {"video": list(layout["train"]), "class_id": list(layout["train"].values())}
    ).to_pickle(notes / "Nsynth-train.pkl")
    index = read_split("nsynth", tmp_path, "train", {"annotations_dir": str(notes)})
    assert sorted(_labels_of(index, "nsynth")) == ["bass", "guitar"]


# --- ClipDataset -----------------------------------------------------------------------------


def test_clip_dataset_items(tmp_path: Path) -> None:
    _nsynth(tmp_path)
    write_wav(
        tmp_path / "nsynth-test" / "audio" / "organ_electronic_001-050-075.wav",
        _noise(5, 16000),
        16000,
    )
    index = read_split("nsynth", tmp_path, "test", {})
    audio = get_preset("nsynth").model_copy(update={"test_views": 3})
    train = ClipDataset(index, audio, "train", augment=AugmentConfig(), seed=1)
    x, y = train[0]
    assert x.shape == (1, audio.num_frames, audio.n_mels) and x.dtype == torch.float32
    assert y.tolist() == [index.clips[0].labels[0]]
    # Randomness depends on (seed, epoch, index) only.
    again = ClipDataset(index, audio, "train", augment=AugmentConfig(), seed=1)
    assert torch.equal(again[0][0], x)
    again.set_epoch(1)
    assert not torch.equal(again[0][0], x)

    evaluation = ClipDataset(index, audio, "eval")
    items = [evaluation[i] for i in range(len(evaluation))]
    views = [len(item[0]) for item in items]
    assert sorted(views) == [1, 3]  # 0.2 s: one view; 5 s: the preset's test views
    batch = collate_eval(items)
    assert batch.inputs.shape == (4, 1, audio.num_frames, audio.n_mels)
    assert batch.views.tolist() == views and batch.indices.tolist() == [0, 1]

    evaluation.cache_audio(threads=2, progress=False)
    np.testing.assert_array_equal(evaluation[1][0], items[1][0])
