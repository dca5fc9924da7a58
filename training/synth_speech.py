"""A Speech Commands v2 look-alike synthesised with espeak-ng, for the built-in default model.

The real dataset cannot ship with the project, but a model that recognises the 35 command words
out of the box can be trained on speech we make ourselves. A "voice" is an espeak-ng voice
variant (``+f3``, ``+Storm``...); every rendition picks one of the English accents (or, for some,
a tonal language's voice reading English, for an accent), a speaking rate, pitch and amplitude,
then the word is trimmed, put at a random offset in one second, mixed with noise at a random SNR
and given a random gain. Whole variants are held out for validation and test, so those scores
measure voices the model never heard.

Besides the 35 words, two classes every keyword spotter needs: ``_unknown_`` (speech that is none
of the words: near misses, ordinary words and short phrases from :mod:`arinext.training.vocabulary`,
spoken by the same voices, English and foreign) and ``_silence_`` (no speech: silence, noise,
hum, tones, clicks; :func:`arinext.training.waveform_augment.non_speech`).

The output has the layout of the real dataset (``<word>/<voicehash>_nohash_<k>.wav``,
``validation_list.txt``, ``testing_list.txt``), so the ordinary Speech Commands reader trains on
it, plus ``recipe.json`` recording every parameter needed to make it again. flite and Festival
voices are never used here: they are the out-of-domain test (:mod:`arinext.training.synth_ood`).

Every item draws its randomness from a seed derived from ``(seed, word, variant, k)``, so the
bytes do not depend on the number of workers or the order in which they finish. This module does
not import torch: its sub-command is registered by ``arinext`` in the torch-free serving image.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from arinext.model.labels import SILENCE, UNKNOWN, load_labels
from arinext.training.vocabulary import TRAIN_WORDS

__all__ = [
    "ACCENTS",
    "FOREIGN_ACCENTS",
    "NOISE_KINDS",
    "SAMPLE_RATE",
    "SILENCE",
    "UNKNOWN",
    "Item",
    "Recipe",
    "derive_seed",
    "espeak_available",
    "espeak_version",
    "list_variants",
    "plan_items",
    "read_recipe",
    "record_in_manifest",
    "render_item",
    "split_variants",
    "spoken",
    "spoken_text",
    "synthesize",
    "synthesize_dataset",
    "trim",
    "voice_hash",
]

log = logging.getLogger(__name__)

RECORDINGS_ATTRIBUTION = (
    "Recorded speech: Google Speech Commands (Warden 2018, arXiv:1804.03209), CC BY 4.0. The "
    "recordings come from the dataset's official test split (v0.02) and a few v0.01 samples, split "
    "here by speaker: these figures are not comparable with published Speech Commands results."
)

ESPEAK = "espeak-ng"
SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # one second, as the real dataset

# espeak-ng's own (formant) English voices.
ACCENTS: tuple[str, ...] = (
    "en-gb",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)

# Voices of other languages that read Latin text with English phonemes in their own prosody
# (espeak-ng switches them to English letter-to-sound rules): foreign accents that still say the
# right word. Voices that apply their own spelling rules ("three" -> "tre:") would teach wrong
# labels, so they only speak ``_unknown_`` words (``FOREIGN_UNKNOWN_ACCENTS``).
FOREIGN_ACCENTS: tuple[str, ...] = ("cmn", "vi", "vi-vn-x-central", "vi-vn-x-south", "hi", "ru")
FOREIGN_UNKNOWN_ACCENTS: tuple[str, ...] = ("de", "nl", "es", "it", "pl", "sv", "fr-fr")

# The accent alone, without a variant, counts as one more voice.
PLAIN_VARIANT = "plain"

NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown", "hum")

# Pseudo-voice of the non-speech clips (they have no speaker); split by index instead.
SILENCE_VOICE = "nonspeech"

SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class Recipe:
    """Every knob of the generator; saved as ``recipe.json`` so a dataset can be remade."""

    seed: int = 0
    per_voice: int = 4
    words: tuple[str, ...] = ()
    accents: tuple[str, ...] = ACCENTS
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    rate_wpm: tuple[int, int] = (120, 220)
    pitch: tuple[int, int] = (20, 80)
    amplitude: tuple[int, int] = (60, 160)
    snr_db: tuple[float, float] = (5.0, 40.0)
    peak_dbfs: tuple[float, float] = (-30.0, -1.0)
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    trim_db: float = 40.0
    voices: dict[str, list[str]] = field(default_factory=dict)
    # How often a rendition uses a foreign voice instead of an English accent.
    foreign_fraction: float = 0.15
    foreign_accents: tuple[str, ...] = FOREIGN_ACCENTS
    # ``_unknown_`` renditions per voice and ``_silence_`` clips in all (0: leave the class out).
    unknown_per_voice: int = 0
    unknown_words: tuple[str, ...] = TRAIN_WORDS
    silence: int = 0


@dataclass(frozen=True)
class Item:
    """One utterance to render: which word, which voice, which rendition of it."""

    word: str
    variant: str
    k: int
    split: str

    @property
    def relpath(self) -> str:
        """Path relative to the dataset root, in the real dataset's naming scheme."""
        return f"{self.word}/{voice_hash(self.variant)}_nohash_{self.k}.wav"


def espeak_available() -> bool:
    """Whether the espeak-ng program is on PATH."""
    return shutil.which(ESPEAK) is not None


def espeak_version() -> str:
    """First line of ``espeak-ng --version``; recorded because voices change between releases."""
    out = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[0].split("  Data at:")[0].strip()


def list_variants() -> list[str]:
    """Installed voice variants usable as ``-v <accent>+<variant>``, sorted, plus ``plain``.

    Variants whose file name contains a space cannot be named on the command line and are left
    out.
    """
    out = subprocess.run(
        [ESPEAK, "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    names = set()
    for line in out.splitlines()[1:]:
        tokens = line.split()
        files = [i for i, tok in enumerate(tokens) if tok.startswith("!v/")]
        if not files:
            continue
        after = tokens[files[0] + 1 : files[0] + 2]
        # A file name with a space leaves a stray word before the "Other Languages" column.
        if not after or after[0].startswith("("):
            names.add(tokens[files[0]].removeprefix("!v/"))
    return [PLAIN_VARIANT, *sorted(names, key=str.lower)]


def split_variants(
    variants: Sequence[str],
    seed: int,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> dict[str, list[str]]:
    """Assign whole variants to train, validation and test, reproducibly for a seed.

    Held-out splits get at least one variant each when there are three or more, so even a tiny
    run measures unseen voices.
    """
    ordered = sorted(set(variants), key=str.lower)
    rng = np.random.default_rng(derive_seed(seed, "split"))
    shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
    floor = 1 if len(ordered) >= 3 else 0
    n_val = max(floor, round(len(ordered) * validation_fraction))
    n_test = max(floor, round(len(ordered) * test_fraction))
    return {
        "train": sorted(shuffled[n_val + n_test :], key=str.lower),
        "validation": sorted(shuffled[:n_val], key=str.lower),
        "test": sorted(shuffled[n_val : n_val + n_test], key=str.lower),
    }


def voice_hash(variant: str) -> str:
    """Eight hex digits standing in for the real dataset's speaker hash."""
    return hashlib.sha1(variant.encode("utf-8")).hexdigest()[:8]


def derive_seed(*parts: object) -> int:
    """A 64-bit seed from any parts, stable across processes and Python versions."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def plan_items(recipe: Recipe) -> list[Item]:
    """Every utterance of the dataset, in a fixed order."""
    items = [
        Item(word, variant, k, split)
        for split in SPLITS
        for variant in recipe.voices[split]
        for word in recipe.words
        for k in range(recipe.per_voice)
    ]
    items += [
        Item(UNKNOWN, variant, k, split)
        for split in SPLITS
        for variant in recipe.voices[split]
        for k in range(recipe.unknown_per_voice)
    ]
    # Non-speech has no voice to hold out: every tenth clip goes to validation, the next to test.
    held_out = {0: "validation", 1: "test"}
    items += [
        Item(SILENCE, SILENCE_VOICE, k, held_out.get(k % 10, "train"))
        for k in range(recipe.silence)
    ]
    return items


def synthesize(text: str, voice: str, rate: int, pitch: int, amplitude: int) -> np.ndarray:
    """Run espeak-ng and return float32 samples at ``SAMPLE_RATE``."""
    from arinext.model import audio_io

    cmd = [ESPEAK, "--stdout", "-v", voice, "-s", str(rate), "-p", str(pitch)]
    cmd += ["-a", str(amplitude), "-g", "0", text]
    done = subprocess.run(cmd, capture_output=True)
    stderr = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {stderr}")
    if stderr:  # e.g. a bad voice attribute: the voice may not be the one asked for
        log.warning("%s: %s", " ".join(cmd), stderr)
    wav = done.stdout
    samples, rate_in = audio_io.read_file(io.BytesIO(wav))
    return audio_io.resample(samples, rate_in, SAMPLE_RATE)


def trim(samples: np.ndarray, below_peak_db: float, margin: int = 160) -> np.ndarray:
    """Cut leading and trailing silence (espeak-ng pads every utterance) so offsets are ours."""
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak == 0.0:
        return samples
    loud = np.flatnonzero(np.abs(samples) >= peak * 10 ** (-below_peak_db / 20))
    start = max(int(loud[0]) - margin, 0)
    stop = min(int(loud[-1]) + margin + 1, samples.size)
    return samples[start:stop]


def spoken(text: str, voice: str) -> np.ndarray:
    """``text`` said once by ``voice`` at espeak-ng's default rate, pitch and amplitude, trimmed.

    For probes that ask how a model hears a voice it was not trained on (no noise, no offset).
    """
    return trim(synthesize(text, voice, 175, 50, 100), Recipe.trim_db)


def _text_and_accents(
    item: Item, recipe: Recipe, rng: np.random.Generator
) -> tuple[str, tuple[str, ...]]:
    """What to say and which accents may say it."""
    foreign = rng.random() < recipe.foreign_fraction and bool(recipe.foreign_accents)
    if item.word != UNKNOWN:
        return item.word, recipe.foreign_accents if foreign else recipe.accents
    words = recipe.unknown_words
    # A third are short phrases: running speech that is none of the words.
    count = 1 if rng.random() < 0.67 else int(rng.integers(2, 4))
    text = " ".join(words[int(i)] for i in rng.integers(len(words), size=count))
    if foreign:
        return text, recipe.foreign_accents + FOREIGN_UNKNOWN_ACCENTS
    return text, recipe.accents


def _item_rng(item: Item, recipe: Recipe) -> np.random.Generator:
    """The generator every random choice of one utterance comes from, in a fixed order."""
    return np.random.default_rng(derive_seed(recipe.seed, item.word, item.variant, item.k))


def spoken_text(item: Item, recipe: Recipe) -> str:
    """What ``item`` says (for ``_unknown_``, the words drawn for it), without synthesising:
    the first draw :func:`render_item` makes, so a dataset's clips can be told apart by what
    was said (near misses, other words, phrases) after the fact. ``_silence_`` says nothing."""
    if item.word == SILENCE:
        raise ValueError(f"{item.relpath}: a {SILENCE} clip says nothing")
    return _text_and_accents(item, recipe, _item_rng(item, recipe))[0]


def read_recipe(data_root: Path | str) -> Recipe:
    """The :class:`Recipe` a dataset was made with, from its ``recipe.json``."""
    data = json.loads((Path(data_root) / "recipe.json").read_text(encoding="utf-8"))
    names = {f.name for f in fields(Recipe)}
    knobs: dict[str, Any] = {  # JSON lists back to the recipe's tuples
        k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names
    }
    return Recipe(**knobs)


def render_item(item: Item, recipe: Recipe) -> np.ndarray:
    """One second of float32 audio in [-1, 1]: the word at a random offset, noise, random gain.

    Public so tests can make fresh utterances through exactly the dataset's pipeline (with a
    different recipe seed).
    """
    rng = _item_rng(item, recipe)
    if item.word == SILENCE:
        from arinext.training.waveform_augment import non_speech

        return non_speech(CLIP_SAMPLES, SAMPLE_RATE, rng)
    text, accents = _text_and_accents(item, recipe, rng)
    accent = accents[int(rng.integers(len(accents)))]
    voice = accent if item.variant == PLAIN_VARIANT else f"{accent}+{item.variant}"
    rate = int(rng.integers(recipe.rate_wpm[0], recipe.rate_wpm[1] + 1))
    pitch = int(rng.integers(recipe.pitch[0], recipe.pitch[1] + 1))
    amplitude = int(rng.integers(recipe.amplitude[0], recipe.amplitude[1] + 1))
    speech = trim(synthesize(text, voice, rate, pitch, amplitude), recipe.trim_db)
    if speech.size > CLIP_SAMPLES:
        # A phrase longer than the window: a random one-second stretch of it.
        start = int(rng.integers(0, speech.size - CLIP_SAMPLES + 1))
        speech = speech[start : start + CLIP_SAMPLES]
    speech = speech.astype(np.float64)
    peak = np.abs(speech).max() if speech.size else 0.0
    if peak > 0:
        speech /= peak

    clip = np.zeros(CLIP_SAMPLES, dtype=np.float64)
    offset = int(rng.integers(0, CLIP_SAMPLES - speech.size + 1))
    clip[offset : offset + speech.size] = speech

    speech_rms = np.sqrt(np.mean(speech**2)) if speech.size else 0.0
    snr_db = rng.uniform(*recipe.snr_db)
    kind = recipe.noise_kinds[int(rng.integers(len(recipe.noise_kinds)))]
    clip += _noise(kind, rng) * speech_rms * 10 ** (-snr_db / 20)

    peak_dbfs = rng.uniform(*recipe.peak_dbfs)
    clip *= 10 ** (peak_dbfs / 20) / (np.abs(clip).max() + 1e-12)
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def _noise(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS background of one clip: coloured noise or mains hum."""
    from arinext.training.waveform_augment import colored_noise, hum

    if kind == "hum":
        return hum(CLIP_SAMPLES, SAMPLE_RATE, rng)
    return colored_noise(kind, CLIP_SAMPLES, rng)


def _write_item(args: tuple[Item, Recipe, Path]) -> str:
    import soundfile as sf

    item, recipe, root = args
    path = root / item.relpath
    clip = render_item(item, recipe)
    sf.write(path, clip, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return item.relpath


def synthesize_dataset(
    out_dir: Path | str,
    *,
    seed: int = 0,
    per_voice: int = 4,
    words: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    unknown_per_voice: int = 0,
    silence: int = 0,
    workers: int | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    **knobs: object,
) -> Recipe:
    """Write the whole dataset under ``out_dir`` and return the recipe that made it.

    ``variants`` restricts the shipped voices (tests use a handful); ``knobs`` override other
    ``Recipe`` fields such as ``snr_db``.
    """
    if not espeak_available():
        raise RuntimeError(f"{ESPEAK} not found on PATH")
    all_words = load_labels("speech_commands_v2")
    words = list(all_words if words is None else words)
    unknown = sorted(set(words) - set(all_words))
    if unknown:
        raise ValueError(f"not Speech Commands v2 words: {', '.join(unknown)}")
    installed = list_variants()
    chosen = installed if variants is None else list(variants)
    missing = sorted(set(chosen) - set(installed))
    if missing:
        raise ValueError(f"voice variants not installed: {', '.join(missing)}")

    voices = split_variants(chosen, seed, validation_fraction, test_fraction)
    recipe = Recipe(
        seed=seed,
        per_voice=per_voice,
        words=tuple(words),
        voices=voices,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        unknown_per_voice=unknown_per_voice,
        silence=silence,
        **knobs,  # type: ignore[arg-type]
    )
    items = plan_items(recipe)

    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        # Files of another recipe would silently join the training split.
        raise FileExistsError(f"{root} is not empty; remove it or choose another OUT_DIR")
    root.mkdir(parents=True, exist_ok=True)
    for word in {item.word for item in items}:
        (root / word).mkdir(exist_ok=True)
    workers = workers or os.cpu_count() or 1
    log.info(
        "synthesising %d utterances (%d words, voices train/val/test %d/%d/%d) with %d workers",
        len(items),
        len(words),
        *(len(voices[s]) for s in SPLITS),
        workers,
    )
    jobs = [(item, recipe, root) for item in items]
    if workers == 1:
        done = sum(1 for _ in map(_write_item, jobs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = sum(1 for _ in pool.map(_write_item, jobs, chunksize=32))
    log.info("wrote %d files under %s", done, root)

    _write_list(root / "validation_list.txt", (i for i in items if i.split == "validation"))
    _write_list(root / "testing_list.txt", (i for i in items if i.split == "test"))
    record = asdict(recipe)
    record["sample_rate"] = SAMPLE_RATE
    record["espeak_ng"] = espeak_version()
    record["voice_hashes"] = {v: voice_hash(v) for s in SPLITS for v in voices[s]}
    record["counts"] = {s: sum(1 for i in items if i.split == s) for s in SPLITS}
    record["classes"] = sorted({item.word for item in items})
    (root / "recipe.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return recipe


def record_in_manifest(
    artifact_dir: Path | str,
    data_root: Path | str,
    steps: Sequence[str],
    command: str,
    *,
    test_report: Path | str | None = None,
    ood_report: Path | str | None = None,
    recordings_report: Path | str | None = None,
) -> None:
    """Add the data recipe, the commands and the shipped artifact's measurements to its manifest.

    ``arinext export`` records the training config but knows nothing of where the data came
    from; the default model must be reproducible from its manifest alone. ``test_report`` and
    ``ood_report`` are ``arinext evaluate`` outputs on the exported artifact itself (held-out
    espeak-ng voices; the flite/Festival conditions): their numbers replace the run's and go in
    ``metrics``, per-voice detail in ``extra``. ``recordings_report`` (``evaluate --recordings``)
    adds the held-out speakers' figures, with the recordings' attribution and the warning that
    goes with them. ``model.onnx`` is not touched, so the recorded
    sha256 stays valid.
    """
    from arinext.model.manifest import read_manifest, write_manifest

    data = json.loads((Path(data_root) / "recipe.json").read_text(encoding="utf-8"))
    manifest = read_manifest(artifact_dir)
    record: dict = {
        "command": command,
        "steps": list(steps),
        "seed": data["seed"],
        "data_recipe": data,
    }
    if test_report is not None:
        report = json.loads(Path(test_report).read_text(encoding="utf-8"))
        manifest.metrics["test"] = {"split": report["split"], **report["metrics"]}
    if ood_report is not None:
        report = json.loads(Path(ood_report).read_text(encoding="utf-8"))
        manifest.metrics["ood"] = report["summary"]
        record["ood"] = {
            condition: result.get("keywords", {})
            for condition, result in report["conditions"].items()
        }
    if recordings_report is not None:
        report = json.loads(Path(recordings_report).read_text(encoding="utf-8"))
        manifest.metrics["recorded_speech"] = report["summary"]
        record["recorded_speech"] = {
            "attribution": RECORDINGS_ATTRIBUTION,
            "conditions": {
                condition: {k: v for k, v in result["keywords"].items() if k != "per_voice"}
                for condition, result in report["conditions"].items()
            },
        }
    manifest.extra["default_model"] = record
    write_manifest(artifact_dir, manifest)


def _write_list(path: Path, items: Iterable[Item]) -> None:
    path.write_text("".join(f"{i.relpath}\n" for i in items), encoding="utf-8")
