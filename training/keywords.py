"""Your own keywords in minutes: a new head on the default model's speech backbone.

People who want keyword spotting want *their* words ("lights on", "next slide"). The shipped
default model (``service/default_model``) is a speech backbone trained on many voices; a new
head on top of it, trained on synthesised speech of the new phrases (plus a few recordings of the
user, when given), learns them on two CPU cores in minutes:

1. **Speech**: every phrase said by espeak-ng with the default model's voice variants,
   accents, rates, pitches and amplitudes (:mod:`arinext.training.synth_speech`); whole variants
   are held out to measure voices the head never heard. The negatives (``_unknown_``) are
   ordinary words and short phrases (:mod:`arinext.training.vocabulary`), near misses of the new
   phrases (their words alone, or with a word swapped) and the 35 Speech Commands words;
   ``_silence_`` is non-speech.
2. **Window**: the phrases' measured durations set the network's input length (``clip_seconds``
   in the manifest's front-end), so phrases longer than one second fit whole; the service derives
   the stream's window and its debounce from it.
3. **Features**: each clip is placed in the window and augmented several times
   (:class:`arinext.training.waveform_augment.WaveformAugmenter`; the user's recordings many
   more times), in parallel processes; the frozen backbone (ONNX Runtime on the shipped graph)
   turns each view into its pooled embedding, or into the last stage's input when that stage is
   tuned too.
4. **Head**: a linear head (and optionally the last stage) trained on the cached features; the
   network is rebuilt in PyTorch from the shipped graph's weights and exported as an ordinary
   verified artifact (:func:`arinext.model.export.export_artifact`), quantised to int8 when that
   holds (:func:`arinext.model.quantize.quantize_artifact`), measured on the held-out voices.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from arinext.model.labels import SILENCE, UNKNOWN, load_labels
from arinext.training.synth_speech import (
    ACCENTS,
    FOREIGN_ACCENTS,
    FOREIGN_UNKNOWN_ACCENTS,
    PLAIN_VARIANT,
    SAMPLE_RATE,
    _derive_seed,
    _synthesize,
    _trim,
    espeak_version,
    list_variants,
    split_variants,
)
from arinext.training.vocabulary import TRAIN_WORDS

__all__ = [
    "HEAD",
    "KeywordRecipe",
    "KeywordResult",
    "ProgressCallback",
    "phrase_window",
    "train_keywords",
]

log = logging.getLogger(__name__)

HEAD = "keywords"
# Called as (stage, done, total) while a stage runs: synthesis, augmentation, embedding, training.
ProgressCallback = Callable[[str, int, int], None]
# Pooled embedding of the backbone, and the input of its last stage, in the shipped graph.
_EMBEDDING_OUTPUT = "/model/Flatten_output_0"
_LAST_STAGE = "stages.3"
_WINDOW_STEP_S = 0.25
_BATCH = 64
_CALIBRATION = "this run's synthesised clips: training voices calibrate, held-out voices check"


@dataclass(frozen=True)
class KeywordRecipe:
    """Every knob of a keyword run; recorded in the artifact's manifest."""

    seed: int = 0
    per_phrase: int = 120  # espeak-ng renditions of each phrase by training voices
    held_out_per_phrase: int = 16  # ... by held-out voice variants, for the summary
    vocabulary: int = 240  # _unknown_: ordinary words and short phrases
    near_misses: int = 40  # _unknown_ per phrase: its words alone, or one word swapped
    command_words: int = 2  # renditions of each of the 35 Speech Commands words, as _unknown_
    silence: int = 80  # non-speech clips
    copies: int = 3  # augmented views of every synthesised clip
    recording_copies: int = 40  # augmented views of every recording of the user
    tune: Literal["head", "last-stage"] = "head"
    epochs: int = 30
    lr: float = 3e-3
    stage_lr: float = 3e-4
    label_smoothing: float = 0.1
    margin_s: float = 0.25  # silence around the 95th-percentile phrase in the window
    min_window_s: float = 1.0
    int8: bool = True
    foreign_fraction: float = 0.15
    rate_wpm: tuple[int, int] = (120, 220)
    pitch: tuple[int, int] = (20, 80)
    amplitude: tuple[int, int] = (60, 160)


@dataclass
class KeywordResult:
    """What a run wrote and measured."""

    artifact: Path
    labels: list[str]
    window_seconds: float
    precision: str
    seconds: float
    held_out: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Utterance:
    """One clip to synthesise: ``text`` by an espeak-ng ``voice`` (empty: non-speech)."""

    text: str
    label: str
    voice: str
    rate: int
    pitch: int
    amplitude: int
    held_out: bool
    key: int


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def _normalise_phrase(phrase: str) -> str:
    words = _words(phrase)
    if not words:
        raise ValueError(f"phrase {phrase!r} has no words")
    return " ".join(words)


def _contains(text: str, phrase: str) -> bool:
    return f" {phrase} " in f" {' '.join(_words(text))} "


def _plan(phrases: Sequence[str], recipe: KeywordRecipe) -> list[_Utterance]:
    """Every synthesised clip of the run, reproducible from the recipe's seed."""
    voices = split_variants(list_variants(), recipe.seed, 0.1, 0.1)
    train, held = voices["train"], voices["validation"] + voices["test"]
    rng = np.random.default_rng(_derive_seed(recipe.seed, "keywords", *phrases))
    vocabulary = [w for w in TRAIN_WORDS if not any(_contains(w, p) for p in phrases)]
    commands = [w for w in load_labels("speech_commands_v2") if w not in phrases]
    plan: list[_Utterance] = []

    def add(text: str, label: str, held_out: bool, foreign: tuple[str, ...] = ()) -> None:
        variants = held if held_out else train
        variant = variants[int(rng.integers(len(variants)))]
        use_foreign = bool(foreign) and rng.random() < recipe.foreign_fraction
        accents = foreign if use_foreign else ACCENTS
        accent = accents[int(rng.integers(len(accents)))]
        plan.append(
            _Utterance(
                text,
                label,
                accent if variant == PLAIN_VARIANT else f"{accent}+{variant}",
                int(rng.integers(recipe.rate_wpm[0], recipe.rate_wpm[1] + 1)),
                int(rng.integers(recipe.pitch[0], recipe.pitch[1] + 1)),
                int(rng.integers(recipe.amplitude[0], recipe.amplitude[1] + 1)),
                held_out,
                len(plan),
            )
        )

    def vocabulary_text() -> str:
        count = 1 if rng.random() < 0.67 else int(rng.integers(2, 4))
        return " ".join(vocabulary[int(i)] for i in rng.integers(len(vocabulary), size=count))

    for held_out, scale in ((False, 1.0), (True, recipe.held_out_per_phrase / recipe.per_phrase)):
        count = recipe.per_phrase if not held_out else recipe.held_out_per_phrase
        for phrase in phrases:
            for _ in range(count):
                add(phrase, phrase, held_out, FOREIGN_ACCENTS)
        for _ in range(_count(recipe.vocabulary, scale)):
            add(vocabulary_text(), UNKNOWN, held_out, FOREIGN_ACCENTS + FOREIGN_UNKNOWN_ACCENTS)
        for phrase in phrases:
            for text in _near_misses(phrase, phrases, vocabulary, rng, recipe.near_misses * scale):
                add(text, UNKNOWN, held_out, FOREIGN_ACCENTS)
        for word in commands:
            for _ in range(_count(recipe.command_words, scale)):
                add(word, UNKNOWN, held_out, FOREIGN_ACCENTS)
        for _ in range(_count(recipe.silence, scale)):
            plan.append(_Utterance("", SILENCE, "", 0, 0, 0, held_out, len(plan)))
    return plan


def _count(wanted: float, scale: float) -> int:
    """``wanted`` scaled down for the held-out set, at least one unless none was wanted."""
    return max(1, round(wanted * scale)) if wanted > 0 else 0


def _near_misses(
    phrase: str,
    phrases: Sequence[str],
    vocabulary: Sequence[str],
    rng: np.random.Generator,
    count: float,
) -> list[str]:
    """Speech that shares most of ``phrase``: each word alone, or one word replaced."""
    words = phrase.split()
    found: list[str] = []
    for _ in range(_count(count, 1.0)):
        if len(words) == 1:
            text = vocabulary[int(rng.integers(len(vocabulary)))]
        elif rng.random() < 0.3:
            text = words[int(rng.integers(len(words)))]
        else:
            swapped = list(words)
            swapped[int(rng.integers(len(words)))] = vocabulary[int(rng.integers(len(vocabulary)))]
            text = " ".join(swapped)
        if not any(_contains(text, p) for p in phrases):
            found.append(text)
    return found


def _speak(utterance: _Utterance) -> np.ndarray:
    """The trimmed utterance (non-speech clips are made when placed, so empty here)."""
    if not utterance.text:
        return np.zeros(0, dtype=np.float32)
    samples = _synthesize(
        utterance.text, utterance.voice, utterance.rate, utterance.pitch, utterance.amplitude
    )
    return _trim(samples, 40.0).astype(np.float32)


def phrase_window(durations: Sequence[float], margin_s: float, minimum_s: float) -> float:
    """Window length in seconds: the 95th-percentile phrase plus a margin, in quarter seconds.

    Shorter than the longest renditions on purpose: the slowest voices would otherwise make
    every window mostly silence; a longer rendition is cut around its middle.
    """
    longest = float(np.percentile(durations, 95)) + margin_s
    return max(minimum_s, float(np.ceil(longest / _WINDOW_STEP_S - 1e-9) * _WINDOW_STEP_S))


def _frontend(window_s: float) -> Any:
    """The default model's front-end with the window stretched to ``window_s``."""
    from arinext.model.audio_config import AudioConfig

    base = _backbone_manifest().frontend
    samples = round(base.sample_rate * window_s)
    frames = 1 + (samples - 1) // base.hop_length
    settings = {**base.model_dump(), "clip_seconds": window_s, "num_frames": frames}
    settings["name"] = "keywords"
    return AudioConfig(**settings)


def _backbone_dir() -> Path:
    """The shipped default model, whose backbone every keyword artifact starts from."""
    from arinext.service.settings import EMBEDDED_MODEL_DIR

    return EMBEDDED_MODEL_DIR


@cache
def _backbone_manifest() -> Any:
    from arinext.model.manifest import verify_artifact

    return verify_artifact(_backbone_dir())


# --- augmentation in worker processes ---------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(seed: int, babble: list[np.ndarray], frontend: Any) -> None:
    from arinext.training.waveform_augment import WaveformAugmenter

    _WORKER.update(
        augmenter=WaveformAugmenter(SAMPLE_RATE, rooms=16, seed=seed),
        babble=babble,
        frontend=frontend,
    )


def _place(speech: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The utterance at a random offset in ``n`` samples (its middle when longer)."""
    clip = np.zeros(n, dtype=np.float32)
    if speech.size > n:
        start = (speech.size - n) // 2
        return speech[start : start + n].astype(np.float32)
    offset = int(rng.integers(0, n - speech.size + 1))
    clip[offset : offset + speech.size] = speech
    return clip


def _views(job: tuple[np.ndarray, bool, int, int]) -> np.ndarray:
    """Log-mel views ``(copies, frames, mels)`` of one clip: placed, then augmented (copies > 0)
    or only placed and levelled (copies == 0, the held-out view)."""
    from arinext.model.frontend import clip_view
    from arinext.training.waveform_augment import non_speech

    speech, is_speech, copies, seed = job
    cfg = _WORKER["frontend"]
    n = cfg.clip_samples
    augmenter, babble = _WORKER["augmenter"], _WORKER["babble"]

    def talker(rng: np.random.Generator) -> np.ndarray:
        return babble[int(rng.integers(len(babble)))]

    views = []
    for copy in range(max(copies, 1)):
        rng = np.random.default_rng(_derive_seed(seed, copy))
        clip = _place(speech, n, rng) if is_speech else non_speech(n, SAMPLE_RATE, rng)
        if copies:
            clip = augmenter(clip, rng, is_speech=is_speech, babble=talker)
        else:
            clip = clip * (10 ** (rng.uniform(-20, -1) / 20) / (np.abs(clip).max() + 1e-9))
        views.append(clip_view(clip.astype(np.float32), 0, cfg))
    return np.stack(views).astype(np.float32)


def _map(
    function: Callable[[Any], Any],
    jobs: Sequence[Any],
    workers: int,
    stage: str,
    progress: ProgressCallback,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> list[Any]:
    """``function`` over ``jobs`` in worker processes, in order, reporting progress."""
    out = []
    progress(stage, 0, len(jobs))
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for i, job in enumerate(jobs):
            out.append(function(job))
            progress(stage, i + 1, len(jobs))
        return out
    with ProcessPoolExecutor(workers, initializer=initializer, initargs=initargs) as pool:
        for i, result in enumerate(pool.map(function, jobs, chunksize=8)):
            out.append(result)
            progress(stage, i + 1, len(jobs))
    return out


# --- backbone and head --------------------------------------------------------------------------


def _backbone_session(output: str) -> Any:
    """ONNX Runtime on the shipped graph, answering the intermediate tensor ``output``."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(_backbone_dir() / "model.onnx")
    del graph.graph.output[:]
    graph.graph.output.append(onnx.ValueInfoProto(name=output))
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(
        graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _last_stage_input() -> str:
    import onnx

    for node in onnx.load(_backbone_dir() / "model.onnx").graph.node:
        if f"/{_LAST_STAGE}/" in node.name:
            return str(node.input[0])
    raise RuntimeError(f"the backbone graph has no {_LAST_STAGE}")


def _features(views: np.ndarray, output: str, progress: ProgressCallback, stage: str) -> np.ndarray:
    session = _backbone_session(output)
    out = []
    progress(stage, 0, len(views))
    for start in range(0, len(views), _BATCH):
        batch = views[start : start + _BATCH, None]
        out.append(session.run([output], {"logmel": batch})[0])
        progress(stage, min(start + _BATCH, len(views)), len(views))
    return np.concatenate(out)


def _network(classes: int) -> Any:
    """The default model in PyTorch (its plain conv form), weights read from the shipped graph,
    with a fresh head of ``classes`` outputs."""
    import onnx
    import torch
    from onnx import numpy_helper

    from arinext.model.registry import create_model
    from arinext.model.reparam import reparameterize_model

    manifest = _backbone_manifest()
    net = create_model(manifest.architecture, {HEAD: classes}, **manifest.architecture_params)
    net = reparameterize_model(net, manifest.reparameterized, inplace=True)
    graph = onnx.load(_backbone_dir() / "model.onnx").graph
    state = {
        init.name.removeprefix("model."): torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in graph.initializer
        if not init.name.startswith("model.heads.")
    }
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("heads.") for k in missing):
        raise RuntimeError(f"backbone weights do not fit: {missing} / {unexpected}")
    return net


def _fit(
    net: Any,
    features: np.ndarray,
    labels: np.ndarray,
    recipe: KeywordRecipe,
    progress: ProgressCallback,
) -> None:
    """Train the new head (and the last stage, when tuned) on cached features, in place."""
    import torch
    from torch import nn

    torch.manual_seed(recipe.seed)
    head = net.heads[HEAD]
    stage = net.stages[-1] if recipe.tune == "last-stage" else None

    def logits(x: torch.Tensor) -> torch.Tensor:
        if stage is not None:
            x = net.pool(stage(x)).flatten(1)
        return head(net.dropout(x))

    groups = [{"params": head.parameters(), "lr": recipe.lr}]
    if stage is not None:
        groups.append({"params": stage.parameters(), "lr": recipe.stage_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    counts = np.bincount(labels, minlength=head.out_features).astype(np.float64)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=recipe.label_smoothing)
    x_all, y_all = torch.from_numpy(features), torch.from_numpy(labels)
    steps = recipe.epochs * -(-len(labels) // _BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    net.train()
    done = 0
    progress("training", 0, steps)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), _BATCH):
            batch = order[start : start + _BATCH]
            loss = loss_fn(logits(x_all[batch]), y_all[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            done += 1
            progress("training", done, steps)
    net.eval()
    log.info("trained %s for %d steps; last batch loss %.3f", recipe.tune, steps, loss.item())


# --- the run --------------------------------------------------------------------------------


def _read_recording(path: Path) -> np.ndarray:
    from arinext.model.audio_io import read_file, resample

    samples, rate = read_file(path)
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return _trim(resample(samples.astype(np.float32), rate, SAMPLE_RATE), 40.0)


def _summary(
    probs: np.ndarray, labels: np.ndarray, names: Sequence[str], voices: list[str]
) -> dict:
    from arinext.training.keyword_report import keyword_report

    report = keyword_report(probs, labels, names, voices)
    keep = ("top1", "keyword_top1", "keyword_clips", "false_alarm_rate", "false_alarm_threshold")
    return {
        **{k: report[k] for k in keep},
        "non_keyword_clips": report["non_keyword_clips"],
        "per_phrase": report["per_keyword"],
    }


def _write_clips(root: Path, clips: Sequence[tuple[np.ndarray, str]], check: set[int]) -> None:
    """Clips in the Speech Commands layout (validation = the check set) for int8 calibration."""
    import soundfile as sf

    listed = []
    for i, (samples, label) in enumerate(clips):
        (root / label).mkdir(parents=True, exist_ok=True)
        sf.write(root / label / f"{i}.wav", samples, SAMPLE_RATE, subtype="FLOAT")
        if i in check:
            listed.append(f"{label}/{i}.wav\n")
    (root / "validation_list.txt").write_text("".join(listed), encoding="utf-8")


def _publish(
    net: Any,
    out: Path,
    name: str,
    frontend: Any,
    classes: list[str],
    recipe: KeywordRecipe,
    calibration: Sequence[tuple[np.ndarray, str]],
    check: set[int],
    extra: dict[str, Any],
    overwrite: bool,
) -> Any:
    """Export fp32, quantise to int8 when the quantiser's guards hold, and publish to ``out``."""
    from arinext.model.export import default_provenance, export_artifact
    from arinext.model.manifest import MODEL_FILE, read_manifest
    from arinext.model.publish import publish_artifact
    from arinext.model.quantize import QuantizeError, quantize_artifact

    manifest = _backbone_manifest()
    with tempfile.TemporaryDirectory(prefix="arinext-keywords-") as tmp:
        fp32 = Path(tmp) / "fp32"
        export_artifact(
            net,
            fp32,
            name=name,
            architecture=manifest.architecture,
            frontend=frontend,
            labels={HEAD: classes},
            level=manifest.reparameterized,
            provenance=default_provenance("arinext train-keywords"),
            extra=extra,
        )
        if recipe.int8:
            clips = Path(tmp) / "clips"
            _write_clips(clips, calibration, check)
            try:
                int8 = quantize_artifact(
                    fp32,
                    out,
                    calibration=clips,
                    name=name,
                    seed=recipe.seed,
                    provenance=default_provenance("arinext train-keywords"),
                    overwrite=overwrite,
                )
            except QuantizeError as exc:
                log.warning("int8 does not hold (%s): writing the fp32 artifact", exc)
            else:
                assert int8.quantization is not None
                int8.quantization.calibration = _CALIBRATION
                return int8
        result = read_manifest(fp32)
        publish_artifact(out, (fp32 / MODEL_FILE).read_bytes(), result)
        return result


def train_keywords(
    phrases: Sequence[str],
    out_dir: Path | str,
    *,
    recordings: Mapping[str, Sequence[Path]] | None = None,
    recipe: KeywordRecipe | None = None,
    name: str = "keywords",
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
) -> KeywordResult:
    """Train a keyword artifact for ``phrases`` and write it to ``out_dir``.

    ``recordings`` maps a phrase to the user's recordings of it (a few each are enough; they are
    augmented ``recipe.recording_copies`` times). ``progress`` is called as (stage, done, total);
    the function logs, never prints, so a server can run it in a worker process.
    """
    import torch

    from arinext.model.manifest import write_manifest
    from arinext.model.publish import destination_problem
    from arinext.model.scores import probabilities

    start = time.perf_counter()
    recipe = recipe or KeywordRecipe()
    report = progress or (lambda stage, done, total: None)
    workers = workers or os.cpu_count() or 1
    phrases = list(dict.fromkeys(_normalise_phrase(p) for p in phrases))
    if not phrases:
        raise ValueError("give at least one phrase")
    recorded = {_normalise_phrase(p): list(paths) for p, paths in (recordings or {}).items()}
    if unknown := sorted(set(recorded) - set(phrases)):
        raise ValueError(f"recordings of phrases not being trained: {', '.join(unknown)}")
    out = Path(out_dir)
    if problem := destination_problem(out, overwrite):
        raise FileExistsError(problem)
    classes = [*phrases, UNKNOWN, SILENCE]
    index = {label: i for i, label in enumerate(classes)}

    plan = _plan(phrases, recipe)
    spoken = _map(_speak, plan, workers, "synthesis", report)
    durations = [
        s.size / SAMPLE_RATE for u, s in zip(plan, spoken, strict=True) if u.label in phrases
    ]
    window = phrase_window(durations, recipe.margin_s, recipe.min_window_s)
    frontend = _frontend(window)
    log.info(
        "phrases last %.2f s (median) to %.2f s (95th percentile): %.2f s windows",
        np.median(durations),
        np.percentile(durations, 95),
        window,
    )

    clips = [(s, u.label, u.held_out, u.voice) for u, s in zip(plan, spoken, strict=True)]
    for phrase, paths in recorded.items():
        clips += [(_read_recording(p), phrase, False, f"recording:{p.name}") for p in paths]
    babble = [c[0] for c in clips if c[1] == UNKNOWN and not c[2]][:64]
    jobs = []
    for i, (samples, label, held_out, voice) in enumerate(clips):
        copies = 0 if held_out else recipe.copies
        if voice.startswith("recording:"):
            copies = recipe.recording_copies
        jobs.append((samples, label != SILENCE, copies, _derive_seed(recipe.seed, "view", i)))
    views = _map(
        _views, jobs, workers, "augmentation", report, _init_worker, (recipe.seed, babble, frontend)
    )
    train = [i for i, c in enumerate(clips) if not c[2]]
    held = [i for i, c in enumerate(clips) if c[2]]
    x_train = np.concatenate([views[i] for i in train])
    y_train = np.concatenate([np.full(len(views[i]), index[clips[i][1]]) for i in train])

    output = _EMBEDDING_OUTPUT if recipe.tune == "head" else _last_stage_input()
    features = _features(x_train, output, report, "embedding")
    torch.set_num_threads(workers)
    net = _network(len(classes))
    _fit(net, features, y_train, recipe, report)

    rng = np.random.default_rng(_derive_seed(recipe.seed, "calibration"))
    picked = [int(i) for i in rng.choice(train, size=min(200, len(train)), replace=False)]
    calibration = [(_place_for(clips[i][0], clips[i][1], frontend, i), clips[i][1]) for i in picked]
    calibration += [(_place_for(clips[i][0], clips[i][1], frontend, i), clips[i][1]) for i in held]
    check = set(range(len(picked), len(calibration)))
    extra = {
        "keywords": {
            "phrases": phrases,
            "recipe": asdict(recipe),
            "window_seconds": window,
            "phrase_seconds": {
                "median": round(float(np.median(durations)), 3),
                "p95": round(float(np.percentile(durations, 95)), 3),
                "max": round(float(np.max(durations)), 3),
            },
            "clips": {
                "synthesised_train": sum(1 for u in plan if not u.held_out),
                "synthesised_held_out": sum(1 for u in plan if u.held_out),
                "recordings": {p: len(v) for p, v in recorded.items()},
                "training_views": len(y_train),
            },
            "backbone": {"name": _backbone_manifest().name, "sha256": _backbone_manifest().sha256},
            "espeak_ng": espeak_version(),
        }
    }
    manifest = _publish(
        net, out, name, frontend, classes, recipe, calibration, check, extra, overwrite
    )

    from arinext.model.backends import open_session

    session = open_session(
        out / "model.onnx", backend="onnxruntime", precision="auto", threads=workers
    )
    held_views = np.concatenate([views[i] for i in held])[:, None]
    logits = np.concatenate(
        [
            session.run([f"logits_{HEAD}"], {"logmel": held_views[s : s + _BATCH]})[0]
            for s in range(0, len(held_views), _BATCH)
        ]
    )
    summary = _summary(
        probabilities(logits, "softmax"),
        np.array([index[clips[i][1]] for i in held]),
        classes,
        [clips[i][3] for i in held],
    )
    seconds = time.perf_counter() - start
    manifest.metrics["held_out_voices"] = summary
    manifest.metrics["train_seconds"] = round(seconds, 1)
    write_manifest(out, manifest)
    log.info("wrote %s (%s) in %.0f s", out, manifest.precision, seconds)
    return KeywordResult(out, classes, window, manifest.precision, seconds, summary)


def _place_for(speech: np.ndarray, label: str, frontend: Any, seed: int) -> np.ndarray:
    """A clip as the artifact hears it, placed in its window (calibration and check clips)."""
    from arinext.training.waveform_augment import non_speech

    rng = np.random.default_rng(_derive_seed("place", seed))
    n = frontend.clip_samples
    if label == SILENCE:
        return non_speech(n, SAMPLE_RATE, rng).astype(np.float32)
    clip = _place(speech, n, rng)
    return clip * np.float32(10 ** (rng.uniform(-20, -1) / 20) / (np.abs(clip).max() + 1e-9))
