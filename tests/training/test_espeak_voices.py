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


def test_pitch_follows_gender() -> None:
    lows = {"female": [], "male": []}
    for name in generated_names(60):
        fields = _fields(variant_text(0, name))
        assert fields["name"] == [name]
        low, high = (int(v) for v in fields["pitch"])
        assert low < high
        lows[fields["gender"][0]].append(low)
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


@pytest.mark.system
@needs_espeak
def test_too_many_voices_is_an_error_not_a_silent_fallback() -> None:
    # Past espeak-ng's list size the extra variants would quietly become the plain voice.
    names = generated_names(MAX_VOICES)
    with pytest.raises(ValueError, match="at most"), voice_directory(0, names):
        pass
