"""The default model's data: `_unknown_` and `_silence_`, the vocabulary, the out-of-domain set.

flite and Festival are the out-of-domain test and must never reach the training data; these
tests check the generator's output by class, voice and condition, and that the Speech Commands
reader turns the extra folders into the two extra classes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from arinext.model.labels import NOT_KEYWORDS, SILENCE, UNKNOWN, load_labels
from arinext.training.synth_speech import espeak_available, synthesize_dataset, voice_hash
from arinext.training.vocabulary import HELD_OUT_WORDS, HOMOPHONES, TRAIN_WORDS

sf = pytest.importorskip("soundfile")
KEYWORDS = load_labels("speech_commands_v2")


def test_vocabulary_is_not_keywords_and_held_out_is_unseen() -> None:
    assert len(TRAIN_WORDS) >= 300 and len(HELD_OUT_WORDS) >= 50
    spoken = {w for phrase in TRAIN_WORDS for w in phrase.split()}
    for words in (spoken, set(HELD_OUT_WORDS)):
        assert not words & set(KEYWORDS)
        assert not words & set(HOMOPHONES)
    assert not set(HELD_OUT_WORDS) & spoken
    assert {UNKNOWN, SILENCE} == NOT_KEYWORDS


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    root = tmp_path_factory.mktemp("kws")
    synthesize_dataset(
        root,
        seed=3,
        per_voice=1,
        words=["yes", "no"],
        variants=["plain", "f3", "m1", "Storm", "croak"],
        unknown_per_voice=3,
        silence=20,
        workers=2,
    )
    return root


@pytest.mark.system
def test_unknown_and_silence_folders(dataset: Path) -> None:
    assert len(list((dataset / UNKNOWN).glob("*.wav"))) == 5 * 3
    silence = sorted((dataset / SILENCE).glob("*.wav"))
    assert len(silence) == 20
    for path in [*silence, *(dataset / UNKNOWN).glob("*.wav")]:
        info = sf.info(path)
        assert (info.samplerate, info.frames, info.channels) == (16000, 16000, 1)
    speech = [sf.read(p)[0] for p in (dataset / UNKNOWN).glob("*.wav")]
    assert all(np.abs(s).max() > 0.01 for s in speech)
    recipe = json.loads((dataset / "recipe.json").read_text())
    assert recipe["classes"] == sorted(["yes", "no", UNKNOWN, SILENCE])
    assert recipe["unknown_per_voice"] == 3 and recipe["silence"] == 20
    held_out = (dataset / "testing_list.txt").read_text() + (
        dataset / "validation_list.txt"
    ).read_text()
    assert f"{SILENCE}/" in held_out and f"{UNKNOWN}/" in held_out


@pytest.mark.system
def test_reader_adds_the_two_classes_only_when_asked(dataset: Path) -> None:
    from arinext.training.datasets import read_split

    plain = read_split("speech_commands", str(dataset), "train", {})
    extra = read_split("speech_commands", str(dataset), "train", {"extra_classes": True})
    names = extra.heads["speech_commands"]
    assert names == [*KEYWORDS, UNKNOWN, SILENCE]
    assert plain.heads["speech_commands"] == KEYWORDS
    labels = {names[c.labels[0]] for c in extra.clips}
    assert labels == {"yes", "no", UNKNOWN, SILENCE}
    assert len(extra.clips) > len(plain.clips)
    # A word folder outside the 35 is speech that is no keyword: _unknown_.
    odd = dataset / "banana"
    odd.mkdir()
    try:
        shutil.copy(next((dataset / "yes").glob("*.wav")), odd / f"{voice_hash('x')}_nohash_0.wav")
        again = read_split("speech_commands", str(dataset), "train", {"extra_classes": True})
        moved = [c for c in again.clips if "/banana/" in c.path]
        assert [names[c.labels[0]] for c in moved] == [UNKNOWN]
    finally:
        shutil.rmtree(odd)


@pytest.mark.system
def test_out_of_domain_set(tmp_path: Path) -> None:
    from arinext.training.synth_ood import ood_voices, synthesize_ood
    from arinext.training.waveform_augment import CONDITIONS

    installed = {f"{e}:{v}" for e, v in ood_voices()}
    wanted = {"flite:slt", "festival:kal_diphone"}
    if not wanted <= installed:
        pytest.skip(f"needs {sorted(wanted - installed)} (flite, festival, festvox-kallpc16k)")
    recipe = synthesize_ood(
        tmp_path,
        seed=1,
        per_voice=1,
        voices=sorted(wanted),
        words=["yes", "stop"],
        unknown_words=["apple", "garden"],
        non_speech=3,
        workers=2,
    )
    assert recipe["conditions"] == list(CONDITIONS)
    per_condition = 2 * 2 + 2 * 2 + 3
    for condition in CONDITIONS:
        wavs = sorted((tmp_path / condition).glob("*/*.wav"))
        assert len(wavs) == per_condition
        listed = (tmp_path / condition / "testing_list.txt").read_text().split()
        assert sorted(listed) == sorted(
            p.relative_to(tmp_path / condition).as_posix() for p in wavs
        )
        for path in wavs:
            samples, rate = sf.read(path)
            assert rate == 16000 and samples.shape == (16000,)
            if path.parent.name != SILENCE:
                assert np.abs(samples).max() > 10 ** (-40 / 20), path
    clean = sf.read(tmp_path / "clean" / "yes" / f"{voice_hash('flite:slt')}_nohash_0.wav")[0]
    phone = sf.read(tmp_path / "telephone" / "yes" / f"{voice_hash('flite:slt')}_nohash_0.wav")[0]
    assert not np.allclose(clean, phone)
    with pytest.raises(FileExistsError):
        synthesize_ood(tmp_path, voices=sorted(wanted))


@pytest.mark.system
def test_keyword_runs_hold_out_the_backbones_held_out_voices() -> None:
    """A keyword run's held-out voices are the backbone's held-out ones, whatever its own seed."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    from arinext.training.keywords import KeywordRecipe
    from arinext.training.keywords.backbone import load_backbone
    from arinext.training.keywords.speech import plan_speech
    from arinext.training.synth_speech import PLAIN_VARIANT, list_variants, split_variants

    seed = load_backbone().voice_seed()
    backbone = split_variants(list_variants(), seed, 0.1, 0.1)
    unheard = set(backbone["validation"] + backbone["test"])

    def variant(voice: str) -> str:
        return voice.split("+", 1)[1] if "+" in voice else PLAIN_VARIANT

    for run_seed in (0, 1, 7):
        plan = plan_speech(["lights on"], KeywordRecipe(seed=run_seed, per_phrase=8), seed)
        held = {variant(u.voice) for u in plan if u.held_out and u.voice}
        trained = {variant(u.voice) for u in plan if not u.held_out and u.voice}
        assert held and held <= unheard
        assert trained and not trained & unheard
