"""Random espeak-ng voice variants: many more speakers than the ~100 variants espeak-ng ships.

A keyword model trained on a hundred voices may learn those voices rather than the words.
espeak-ng describes a speaker in a small text file (``voices/!v/<name>``: pitch range,
per-formant frequency/height/width scaling, breath, echo, roughness, flutter, voicing, spectral
tone, Klatt source). This module draws such files at random within the ranges the shipped
variants span, female and male, and lays out a private copy of espeak-ng's data directory
(symbolic links plus the new files) for ``espeak-ng --path``. It is still espeak-ng speech:
flite and Festival stay unheard. (Measured: 120 of them raised the default model's two female
flite/Festival voices by 6-7 points but not the mean; see the README.)

Every voice is a pure function of ``(seed, name)``, so a dataset's recipe remakes it exactly.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

__all__ = [
    "ESPEAK",
    "GENERATED_PREFIX",
    "MAX_VOICES",
    "espeak_data_dir",
    "espeak_version_text",
    "generated_names",
    "is_generated",
    "variant_text",
    "voice_directory",
]

ESPEAK = "espeak-ng"
GENERATED_PREFIX = "gen-"
FORMANTS = 9
# espeak-ng (1.51) stops listing voices at N_VOICES_LIST - 2; voices/ is read before lang/, so
# an overflow drops languages. ``voice_directory`` also checks the listing itself.
MAX_VOICES = 348


def generated_names(count: int) -> list[str]:
    """Names of the first ``count`` generated variants (``gen-000``, ``gen-001``...)."""
    return [f"{GENERATED_PREFIX}{i:03d}" for i in range(count)]


def is_generated(variant: str) -> bool:
    """Whether a variant name is one of ours rather than one espeak-ng ships."""
    return variant.startswith(GENERATED_PREFIX)


def _rng(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/espeak-voice/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def variant_text(seed: int, name: str) -> str:
    """The espeak-ng variant file of generated voice ``name`` for dataset seed ``seed``.

    Ranges follow the shipped variants: female pitch bases 140-235 Hz with a vocal tract that
    scales formants 1-8 to 105-128 %, male 65-135 Hz and 82-106 %, each formant within 8 % of
    that scale (espeak-ng shifts formants with pitch on top); formant heights and widths, breath,
    echo, roughness, flutter, voicing, tone and the Klatt source are drawn independently, so
    voices mix traits no shipped variant has together.
    """
    rng = _rng(seed, name)
    female = rng.random() < 0.5
    base = rng.uniform(140, 235) if female else rng.uniform(65, 135)
    span = rng.uniform(40, 120) if female else rng.uniform(25, 80)
    tract = rng.uniform(105, 128) if female else rng.uniform(82, 106)
    lines = [
        "language variant",
        f"name {name}",
        f"gender {'female' if female else 'male'}",
        f"pitch {base:.0f} {base + span:.0f}",
    ]
    for k in range(FORMANTS):
        # Formant 0 is the voicing bar; 1-5 carry the vowel; 6-8 the upper spectrum.
        freq = rng.uniform(85, 115) if k == 0 else tract * np.clip(rng.normal(1, 0.04), 0.92, 1.08)
        height = rng.uniform(60, 120)
        width = rng.uniform(60, 180)
        lines.append(f"formant {k} {freq:.0f} {height:.0f} {width:.0f}")
    if rng.random() < 0.35:
        level = int(rng.integers(1, 5))
        breath = [0] + [int(rng.integers(max(level - 1, 0), level + 1)) for _ in range(7)]
        lines.append("breath " + " ".join(map(str, breath)))
    if rng.random() < 0.3:
        lines.append(f"echo {int(rng.integers(10, 150))} {int(rng.integers(3, 25))}")
    lines.append(f"roughness {int(rng.integers(0, 6))}")
    lines.append(f"flutter {int(rng.integers(0, 21))}")
    if rng.random() < 0.5:
        lines.append(f"voicing {int(rng.integers(50, 160))}")
    lines.append(f"consonants {int(rng.integers(70, 131))}")
    if rng.random() < 0.3:
        heights = rng.integers(40, 256, size=3)
        lines.append("tone 600 {} 1200 {} 2000 {}".format(*heights))
    if rng.random() < 0.4:
        lines.append(f"klatt {int(rng.integers(1, 7))}")
    return "\n".join(lines) + "\n"


def espeak_version_text() -> str:
    """``espeak-ng --version``: the release and where its data lives."""
    out = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def espeak_data_dir() -> Path:
    """The installed espeak-ng data directory, as ``espeak-ng --version`` reports it."""
    text = espeak_version_text()
    if "Data at:" not in text:
        raise RuntimeError(f"cannot tell where espeak-ng keeps its data: {text!r}")
    return Path(text.split("Data at:")[1].strip())


def _languages(data: Path | None) -> list[str]:
    command = [ESPEAK, "--voices"] if data is None else [ESPEAK, f"--path={data}", "--voices"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return out.splitlines()[1:]


@contextmanager
def voice_directory(seed: int, names: Sequence[str]) -> Iterator[Path]:
    """A temporary espeak-ng data directory whose variants are the generated ``names``.

    Everything but ``voices/`` is a symbolic link into the installed data; pass the yielded
    path as ``espeak-ng --path``. Its ``voices/!v`` holds only the generated variants: espeak-ng
    lists languages and variants together up to a fixed size, and past it silently drops
    languages (the shipped variants are spoken without ``--path``). A directory whose language
    list differs from the installed one is refused. Removed on exit.
    """
    installed = espeak_data_dir()
    languages = _languages(None)
    if len(languages) + len(names) > MAX_VOICES:
        raise ValueError(
            f"espeak-ng lists at most {MAX_VOICES} voices: {len(languages)} languages leave "
            f"room for {MAX_VOICES - len(languages)} generated variants, not {len(names)}"
        )
    with TemporaryDirectory(prefix="arinext-espeak-") as tmp:
        root = Path(tmp)
        for entry in installed.iterdir():
            if entry.name != "voices":
                (root / entry.name).symlink_to(entry)
        variants = root / "voices" / "!v"
        variants.mkdir(parents=True)
        for name in names:
            (variants / name).write_text(variant_text(seed, name), encoding="utf-8")
        if names and _languages(root) != languages:
            raise ValueError(f"espeak-ng drops languages with {len(names)} generated variants")
        yield root
