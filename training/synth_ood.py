"""The default model's out-of-domain test: flite and Festival voices, clean and degraded.

The default model is trained on espeak-ng alone (:mod:`arinext.training.synth_speech`). Held-out
espeak-ng voices still share its formant synthesiser, so they cannot tell whether the model learned
speech or espeak-ng. Two other synthesisers can: flite (CMU's small engine: kal, kal16, awb, rms,
slt) and Festival (diphone and HTS voices). **They are never trained on**; this module only writes
test data.

Each voice says the 35 words (``per_voice`` renditions, the first at its natural duration, the
rest stretched 0.8-1.25x) and the words of :data:`arinext.training.vocabulary.HELD_OUT_WORDS` (words
the training vocabulary never had) as ``_unknown_``; ``_silence_`` holds non-speech clips. Every
clip is written once per condition of :data:`arinext.training.waveform_augment.CONDITIONS` (clean,
10 dB noise, a 0.5 s RT60 room, a telephone line, -30 dB speech over a hum-and-hiss floor)::

    OUT/<condition>/<word>/<voicehash>_nohash_<k>.wav   Speech Commands layout, all in "test"
    OUT/<condition>/testing_list.txt, validation_list.txt
    OUT/recipe.json                                     voices, hashes, conditions, versions

so ``arinext evaluate ARTIFACT --data-root OUT/<condition> --split test`` works on each, and
``arinext evaluate ARTIFACT --ood OUT`` reports them all per voice and condition.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arinext.model.labels import load_labels
from arinext.training.synth_speech import (
    CLIP_SAMPLES,
    SAMPLE_RATE,
    SILENCE,
    UNKNOWN,
    derive_seed,
    trim,
    voice_hash,
)
from arinext.training.vocabulary import HELD_OUT_WORDS

__all__ = [
    "FESTIVAL_VOICES",
    "FLITE_VOICES",
    "OodItem",
    "ood_voices",
    "read_wav",
    "speak_ood",
    "synthesize_ood",
]

log = logging.getLogger(__name__)

# flite's built-in general voices (awb_time only knows clock times, so it is left out).
FLITE_VOICES: tuple[str, ...] = ("kal", "kal16", "awb", "rms", "slt")
# Festival voices Debian packages (festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts).
FESTIVAL_VOICES: tuple[str, ...] = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
NON_SPEECH_CLIPS = 100


@dataclass(frozen=True)
class OodItem:
    """One test utterance: ``engine`` is "flite", "festival" or "none" (non-speech)."""

    engine: str
    voice: str
    word: str  # a keyword, _unknown_ or _silence_
    text: str
    k: int

    @property
    def voice_id(self) -> str:
        return f"{self.engine}:{self.voice}"

    @property
    def relpath(self) -> str:
        return f"{self.word}/{voice_hash(self.voice_id)}_nohash_{self.k}.wav"


def _festival_installed(voice: str) -> bool:
    return shutil.which("festival") is not None and any(
        Path("/usr/share/festival/voices").glob(f"*/{voice}")
    )


def ood_voices() -> list[tuple[str, str]]:
    """(engine, voice) pairs installed here."""
    voices = []
    if shutil.which("flite"):
        voices += [("flite", v) for v in FLITE_VOICES]
    voices += [("festival", v) for v in FESTIVAL_VOICES if _festival_installed(v)]
    return voices


def _stretch(item: OodItem, seed: int) -> float:
    if item.k == 0:
        return 1.0
    rng = np.random.default_rng(derive_seed(seed, "stretch", item.voice_id, item.word, item.k))
    return float(rng.uniform(0.8, 1.25))


def read_wav(path: Path) -> np.ndarray:
    from arinext.model.audio_io import read_file, resample

    samples, rate = read_file(path)
    return resample(samples, rate, SAMPLE_RATE)


def _flite(item: OodItem, stretch: float, out: Path) -> None:
    cmd = ["flite", "-voice", item.voice, "--setf", f"duration_stretch={stretch:.3f}"]
    subprocess.run([*cmd, "-t", item.text, "-o", str(out)], check=True, capture_output=True)


def _festival_batch(voice: str, jobs: Sequence[tuple[str, float, Path]]) -> None:
    """Many utterances in one Festival process (starting one costs about a second)."""
    lines = [f"(voice_{voice})"]
    for text, stretch, out in jobs:
        quoted = text.replace("\\", "").replace('"', "")
        lines += [
            f"(Parameter.set 'Duration_Stretch {stretch:.3f})",
            f'(set! utt (utt.synth (Utterance Text "{quoted}")))',
            f'(utt.save.wave utt "{out}" \'riff)',
        ]
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        subprocess.run(["festival", "-b", script.name], check=True, capture_output=True)
    finally:
        os.unlink(script.name)


def speak_ood(items: Sequence[OodItem], seed: int, folder: Path) -> dict[OodItem, Path]:
    """Every item said by its flite or Festival voice: ``folder/<i>.wav``, untrimmed."""
    raw = {item: folder / f"{i}.wav" for i, item in enumerate(items)}
    festival: dict[str, list[tuple[str, float, Path]]] = {}
    for item in items:
        if item.engine == "flite":
            _flite(item, _stretch(item, seed), raw[item])
        elif item.engine == "festival":
            festival.setdefault(item.voice, []).append((item.text, _stretch(item, seed), raw[item]))
    for voice, jobs in festival.items():
        _festival_batch(voice, jobs)
    return raw


def _place(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The trimmed word at a random offset in one second, peak at -6 to -1 dBFS."""
    speech = speech[:CLIP_SAMPLES]
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    offset = int(rng.integers(0, CLIP_SAMPLES - speech.size + 1))
    clip[offset : offset + speech.size] = speech
    peak = np.abs(clip).max()
    if peak > 0:
        clip *= 10 ** (rng.uniform(-6, -1) / 20) / peak
    return clip


def _write_conditions(args: tuple[OodItem, Path, Path, int]) -> str:
    """Place one raw utterance and write it under every condition."""
    import soundfile as sf

    from arinext.training.waveform_augment import CONDITIONS, degrade, non_speech

    item, raw, root, seed = args
    rng = np.random.default_rng(derive_seed(seed, "ood", item.voice_id, item.word, item.k))
    if item.word == SILENCE:
        clip = non_speech(CLIP_SAMPLES, SAMPLE_RATE, rng)
    else:
        clip = _place(trim(read_wav(raw), 40.0), rng)
    for n, condition in enumerate(CONDITIONS):
        degraded = degrade(clip, SAMPLE_RATE, condition, derive_seed(seed, item.relpath, n))
        sf.write(root / condition / item.relpath, degraded, SAMPLE_RATE, subtype="PCM_16")
    return item.relpath


def plan_ood(
    per_voice: int,
    voices: Sequence[tuple[str, str]],
    words: Sequence[str] | None = None,
    unknown_words: Sequence[str] = HELD_OUT_WORDS,
    non_speech: int = NON_SPEECH_CLIPS,
) -> list[OodItem]:
    """Every test clip, in a fixed order (``words`` defaults to the 35 keywords)."""
    words = load_labels("speech_commands_v2") if words is None else list(words)
    items = [
        OodItem(engine, voice, word, word, k)
        for engine, voice in voices
        for word in words
        for k in range(per_voice)
    ]
    items += [
        OodItem(engine, voice, UNKNOWN, text, k)
        for engine, voice in voices
        for k, text in enumerate(unknown_words)
    ]
    items += [OodItem("none", "nonspeech", SILENCE, "", k) for k in range(non_speech)]
    return items


def synthesize_ood(
    out_dir: Path | str,
    *,
    seed: int = 0,
    per_voice: int = 2,
    workers: int | None = None,
    voices: Sequence[str] | None = None,
    words: Sequence[str] | None = None,
    unknown_words: Sequence[str] = HELD_OUT_WORDS,
    non_speech: int = NON_SPEECH_CLIPS,
) -> dict:
    """Write the out-of-domain test set under ``out_dir``; returns its recipe.

    ``voices`` (``engine:voice`` names), ``words``, ``unknown_words`` and ``non_speech`` narrow
    it down (tests use a few).
    """
    from arinext.training.waveform_augment import CONDITIONS

    installed = ood_voices()
    chosen = installed
    if voices is not None:
        chosen = [(e, v) for e, v in installed if f"{e}:{v}" in voices]
        missing = sorted(set(voices) - {f"{e}:{v}" for e, v in chosen})
        if missing:
            raise ValueError(f"voices not installed: {', '.join(missing)}")
    if not chosen:
        raise RuntimeError("neither flite nor a Festival voice is installed")
    voices_used = chosen
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; remove it or choose another OUT_DIR")
    items = plan_ood(per_voice, voices_used, words, unknown_words, non_speech)
    for condition in CONDITIONS:
        for word in {i.word for i in items}:
            (root / condition / word).mkdir(parents=True, exist_ok=True)
    raw_dir = root / ".raw"
    raw_dir.mkdir()
    log.info("out-of-domain set: %d utterances from %d voices", len(items), len(voices_used))
    raw = speak_ood(items, seed, raw_dir)
    conditions = [(item, raw[item], root, seed) for item in items]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        done = sum(1 for _ in pool.map(_write_conditions, conditions, chunksize=16))
    shutil.rmtree(raw_dir)
    listing = "".join(f"{item.relpath}\n" for item in items)
    for condition in CONDITIONS:
        (root / condition / "testing_list.txt").write_text(listing, encoding="utf-8")
        (root / condition / "validation_list.txt").write_text("", encoding="utf-8")
    recipe = {
        "kind": "out-of-domain test (never train on it)",
        "seed": seed,
        "per_voice": per_voice,
        "sample_rate": SAMPLE_RATE,
        "conditions": list(CONDITIONS),
        "voices": [f"{e}:{v}" for e, v in voices_used],
        "voice_hashes": {
            f"{e}:{v}": voice_hash(f"{e}:{v}") for e, v in [*voices_used, ("none", "nonspeech")]
        },
        "unknown_words": list(unknown_words),
        "counts": {"clips_per_condition": done},
        "engines": _versions(),
    }
    (root / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %d clips x %d conditions under %s", done, len(CONDITIONS), root)
    return recipe


def _versions() -> dict[str, str]:
    out = {}
    for name, cmd in (("flite", ["flite", "--version"]), ("festival", ["festival", "--version"])):
        if shutil.which(name):
            text = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
            out[name] = next((line for line in text.splitlines() if name in line), "unknown")
    return out
