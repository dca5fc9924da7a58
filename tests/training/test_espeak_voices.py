"""Generated espeak-ng voices: reproducible files that espeak-ng really speaks with."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest

from training.espeak_voices import (
    MAX_VOICES,
    generated_names,
    is_generated,
    variant_text,
    voice_directory,
)
from training.synth_speech import espeak_available

sf = pytest.importorskip("soundfile")

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def _fields(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}


def test_names_and_files_are_reproducible() -> None:
    names = generated_names(3)
    assert names == ["gen-000", "gen-001", "gen-002"]
    assert all(is_generated(n) for n in names) and not is_generated("f3")
    assert variant_text(0, "gen-001") == variant_text(0, "gen-001")
    assert variant_text(0, "gen-001") != variant_text(0, "gen-002")
    assert variant_text(0, "gen-001") != variant_text(1, "gen-001")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pitch_and_formants_follow_gender(seed: int) -> None:
    lows: dict[str, list[int]] = {"female": [], "male": []}
    for name in generated_names(60):
        text = variant_text(seed, name)
        fields = _fields(text)
        assert fields["name"] == [name]
        low, high = (int(v) for v in fields["pitch"])
        assert low < high
        gender = fields["gender"][0]
        lows[gender].append(low)
        scales = [int(line.split()[2]) for line in text.splitlines() if line.startswith("formant ")]
        assert len(scales) == 9
        # Formants 1-8 follow the vocal tract: longer (lower) for male voices.
        bounds = (96, 139) if gender == "female" else (75, 115)
        assert all(bounds[0] <= f <= bounds[1] for f in scales[1:]), (name, scales)
    assert lows["female"] and lows["male"]
    assert min(lows["female"]) >= 140 and max(lows["male"]) <= 135


def _speak(voice: str, data: Path | None) -> np.ndarray:
    cmd = ["espeak-ng", "--stdout", "-v", voice, "seven"]
    if data is not None:
        cmd.insert(1, f"--path={data}")
    samples, _ = sf.read(io.BytesIO(subprocess.run(cmd, capture_output=True, check=True).stdout))
    return samples


@pytest.mark.system
@needs_espeak
def test_espeak_speaks_with_the_generated_files() -> None:
    # espeak-ng falls back to the plain voice, silently, for a variant it cannot find: the
    # generated voices must sound different from it and from each other.
    names = generated_names(2)
    plain = _speak("en-us", None)
    with voice_directory(0, names) as data:
        first, second = (_speak(f"en-us+{n}", data) for n in names)
    assert not data.exists()
    for voice in (first, second):
        assert voice.size and np.abs(voice).max() > 0.05
        assert voice.shape != plain.shape or not np.allclose(voice, plain)
    assert first.shape != second.shape or not np.allclose(first, second)


def _languages(data: Path | None) -> list[str]:
    cmd = ["espeak-ng", "--voices"]
    if data is not None:
        cmd.insert(1, f"--path={data}")
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()


@pytest.mark.system
@needs_espeak
def test_as_many_voices_as_fit_and_not_one_more() -> None:
    # Past its list size espeak-ng silently drops languages: the largest directory allowed
    # must still list every installed language, and one voice more must be refused.
    languages = len(_languages(None)) - 1  # less the header line
    room = MAX_VOICES - languages
    with voice_directory(0, generated_names(room)) as data:
        assert _languages(data) == _languages(None)
        assert _speak(f"en-us+{generated_names(room)[-1]}", data).size
    with pytest.raises(ValueError, match="at most"), voice_directory(0, generated_names(room + 1)):
        pass
