"""How the default model hears espeak-ng's MBROLA voices: keyword top-1 per voice, per artifact.

MBROLA voices speak with diphones cut from recordings of real speakers, as flite's and
Festival's diphone voices do, while the default model is trained on espeak-ng's formant voices.
If a model recognises their words as poorly as the flite/Festival test voices', MBROLA speech is
out of its domain too, and a candidate for training (``arinext synth-speech-commands
--mbrola-voices``). Each of the 35 words is said once per voice at espeak-ng's defaults, centred
in one second at -10 dBFS peak, and scored through the served pipeline (``service.prepare`` and
ONNX Runtime, as ``/classify`` does). Needs the ``mbrola`` program and its voices (Debian:
``mbrola``, ``mbrola-us1``... in contrib and non-free).

    python benchmarks/mbrola_probe.py artifacts/speech-commands-synth-b0 [OTHER_ARTIFACT...]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.labels import load_labels  # noqa: E402
from service.inference import load_model  # noqa: E402
from service.prepare import prepare  # noqa: E402
from training.synth_speech import SAMPLE_RATE, list_mbrola_voices, spoken  # noqa: E402


def _centred(samples: np.ndarray) -> bytes:
    word = samples[:SAMPLE_RATE] / (np.abs(samples).max() + 1e-9) * 10 ** (-10 / 20)
    clip = np.zeros(SAMPLE_RATE, dtype=np.float32)
    offset = (SAMPLE_RATE - word.size) // 2
    clip[offset : offset + word.size] = word
    out = io.BytesIO()
    sf.write(out, clip, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", type=Path, nargs="+", metavar="ARTIFACT")
    args = parser.parse_args(argv)
    voices = list_mbrola_voices()
    if not voices:
        raise SystemExit("no MBROLA voice installed (apt-get install mbrola mbrola-us1 ...)")
    words = load_labels("speech_commands_v2")
    models = [load_model(path, intra_op_threads=1) for path in args.artifacts]

    print("# MBROLA probe: keyword top-1 in %, 35 words once per voice\n")
    print("| voice | " + " | ".join(path.name for path in args.artifacts) + " |")
    print("|---" * (len(models) + 1) + "|")
    totals = [0] * len(models)
    for voice in voices:
        clips = [(word, _centred(spoken(word, voice))) for word in words]
        cells = []
        for i, model in enumerate(models):
            head = model.manifest.heads[0]
            right = 0
            for word, wav in clips:
                views = prepare(wav, [model.manifest.frontend], max_seconds=60)
                logits = model.run(views.inputs[0].views)[head.name].mean(axis=0)
                right += head.labels[int(np.argmax(logits))] == word
            totals[i] += right
            cells.append(f"{100 * right / len(words):.0f}")
        print(f"| {voice} | " + " | ".join(cells) + " |", flush=True)
    overall = [f"**{100 * t / (len(words) * len(voices)):.1f}**" for t in totals]
    print("| all | " + " | ".join(overall) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
