"""``arinext predict`` on a real folder of mixed formats, run as a command without torch.

The command runs in a subprocess whose ``torch`` import fails (a stub package first on the path),
which proves it works in the serving environment. Its answers are compared with ``POST /classify``
for every file.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from arinext.model.audio_config import PRESETS
from arinext.service.predict_cli import expand_paths, select_shard
from tests.service.audio import encode_av, encode_sf, signal
from tests.service.conftest import REPO, TEST_BACKEND, TEST_PRECISION

_PREDICT = (sys.executable, "-m", "arinext", "predict")
CORRUPT = ("c/truncated.wav", "c/garbage.mp3")
_ENCODERS = {
    "wav": lambda x, r: encode_sf(x, r, "WAV", "PCM_16"),
    "flac": lambda x, r: encode_sf(x, r, "FLAC"),
    "ogg": lambda x, r: encode_sf(x, r, "OGG", "VORBIS"),
    "mp3": lambda x, r: encode_sf(x, r, "MP3"),
    "opus": lambda x, r: encode_av(x, r, "ogg", "libopus"),
    "m4a": lambda x, r: encode_av(x, r, "ipod", "aac"),
    "webm": lambda x, r: encode_av(x, r, "webm", "libopus"),
}
_RATES = {"opus": 48_000, "webm": 48_000, "m4a": 44_100}


def make_corpus(root: Path, count: int) -> list[Path]:
    """``count`` clips of 0.3-2.6 s in every format, nested folders; the last two are corrupt."""
    rng = np.random.default_rng(0)
    kinds = list(_ENCODERS)
    paths = []
    for i in range(count - len(CORRUPT)):
        kind = kinds[i % len(kinds)]
        rate = _RATES.get(kind, int(rng.choice([8_000, 16_000, 22_050, 44_100])))
        x = signal(float(rng.uniform(0.3, 2.6)), rate, channels=1 + i % 2, seed=i)
        path = root / f"{'ab'[i % 2]}" / f"{i // 50}" / f"clip{i:03d}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_ENCODERS[kind](x, rate))
        paths.append(path)
    wav = encode_sf(signal(1.0, 16_000), 16_000, "WAV", "PCM_16")
    (root / "c").mkdir()
    (root / CORRUPT[0]).write_bytes(wav[: len(wav) // 2])
    (root / CORRUPT[1]).write_bytes(b"\xff\xfb\x90\x00" + bytes(rng.integers(0, 256, 4000)))
    (root / "c" / "notes.txt").write_text("not audio, not picked from a folder")
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, 200)
    return root


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose ``torch`` package refuses to import."""
    root = tmp_path_factory.mktemp("no-torch")
    (root / "torch").mkdir()
    (root / "torch" / "__init__.py").write_text("raise ImportError('torch is blocked here')\n")
    return root


def predict(no_torch: Path, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": f"{no_torch}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    env |= {"ARINEXT_BACKEND": TEST_BACKEND, "ARINEXT_PRECISION": TEST_PRECISION}
    return subprocess.run(
        [*_PREDICT, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _records(text: str) -> dict[str, dict]:
    records = [json.loads(line) for line in text.splitlines()]
    by_path = {r.pop("path"): r for r in records}
    assert len(by_path) == len(records)
    return by_path


@pytest.fixture(scope="module")
def whole_run(
    corpus: Path, speech_artifact: Path, no_torch: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The unsharded run over the corpus with two decoding processes: its process and lines."""
    out = tmp_path_factory.mktemp("whole") / "out.jsonl"
    done = predict(
        no_torch, str(corpus), "--models", str(speech_artifact), "--jobs", "2",
        "--output", str(out),
    )  # fmt: skip
    return done, out.read_text().splitlines()


def test_a_folder_gives_one_record_per_file_and_fails_on_the_corrupt_ones(
    corpus: Path, whole_run, speech_client: TestClient
) -> None:
    done, lines = whole_run
    assert done.returncode == 1, done.stderr
    records = _records("\n".join(lines))
    assert len(records) == 200
    failed = {p for p, r in records.items() if "error" in r}
    assert failed == {(corpus / name).as_posix() for name in CORRUPT}
    for name in CORRUPT:
        assert f"error: {corpus / name}: " in done.stderr
    assert records[(corpus / CORRUPT[0]).as_posix()]["error"]["code"] == "invalid_audio"
    assert "2 of 200 files failed" in done.stderr
    assert "file/s" not in done.stderr  # no progress bar when stderr is not a terminal
    for path, record in records.items():
        if path in failed:
            continue
        answer = speech_client.post(
            "/classify",
            content=Path(path).read_bytes(),
            headers={"content-type": "application/octet-stream"},
        ).json()
        assert record.keys() == answer.keys() - {"timing_ms"}, path
        assert (record["duration"], record["sample_rate"], record["channels"]) == (
            answer["duration"],
            answer["sample_rate"],
            answer["channels"],
        )
        mine, theirs = record["predictions"][0], answer["predictions"][0]
        assert [x["label"] for x in mine["top_k"]] == [x["label"] for x in theirs["top_k"]]
        np.testing.assert_allclose(
            [x["score"] for x in mine["top_k"]], [x["score"] for x in theirs["top_k"]], atol=1e-5
        )


def test_two_shards_together_are_the_whole_run(
    corpus: Path, speech_artifact: Path, no_torch: Path, whole_run, tmp_path
) -> None:
    shards = []
    for shard in ("0/2", "1/2"):
        out = tmp_path / f"{shard.replace('/', 'of')}.jsonl"
        done = predict(
            no_torch, str(corpus), "--models", str(speech_artifact), "--jobs", "1",
            "--shard", shard, "--output", str(out),
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        shards.append(out.read_text().splitlines())
    whole = whole_run[1]
    assert len(shards[0]) == len(shards[1]) == 100
    assert sorted(shards[0] + shards[1]) == sorted(whole)
    paths = [json.loads(line)["path"] for line in whole]
    assert paths == sorted(paths)  # records come in file order
    assert [json.loads(line)["path"] for line in shards[1]] == paths[1::2]


def test_csv_table_windows_hop_and_globs(
    corpus: Path, speech_artifact: Path, no_torch: Path, tmp_path
) -> None:
    for name, seconds in (("long.wav", 3.0), ("longer.flac", 4.0), ("short.wav", 0.5)):
        (tmp_path / name).write_bytes(
            encode_sf(signal(seconds, 16_000), 16_000, name.rpartition(".")[2].upper())
        )
    long = (tmp_path / "long.wav").as_posix()
    args = [str(tmp_path / "lo*.wav"), "--models", str(speech_artifact), "--jobs", "1"]
    args += ["--top-k", "2"]
    jsonl = predict(no_torch, *args, "--windows", "--hop", "0.25")
    assert jsonl.returncode == 0, jsonl.stderr
    records = _records(jsonl.stdout)
    assert list(records) == [long]
    windows = records[long]["predictions"][0]["windows"]
    last = round(3.0 - PRESETS["speech_commands"].clip_seconds, 6)  # ends at the end: 1.977 s
    assert [w["start"] for w in windows] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, last]
    assert windows[-1]["end"] == records[long]["duration"] == 3.0

    as_csv = predict(no_torch, *args, "--hop", "0.25", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    detections = records[long]["predictions"][0]["detections"]
    assert [(r["kind"], r["label"]) for r in rows[: len(detections)]] == [
        ("detection", d["label"]) for d in detections
    ]
    clip_rows = rows[len(detections) :]
    assert [(r["path"], r["head"], r["kind"], r["rank"], r["start"]) for r in clip_rows] == [
        (long, "speech_commands", "clip", "1", ""),
        (long, "speech_commands", "clip", "2", ""),
    ]
    top = records[long]["predictions"][0]["top_k"][0]
    assert clip_rows[0]["label"] == top["label"]
    assert float(clip_rows[0]["score"]) == pytest.approx(top["score"], abs=1e-5)
    # --windows works in every format: one row per window and rank.
    with_windows = predict(no_torch, *args, "--windows", "--format", "csv")
    kinds = [r["kind"] for r in csv.DictReader(io.StringIO(with_windows.stdout))]
    assert kinds.count("window") == 2 * len(windows)

    bad = str(corpus / CORRUPT[0])
    table = predict(no_torch, bad, *args, "--format", "table")
    assert table.returncode == 1
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["PATH", "HEAD", "HEARD", "TOP", "LABELS", "(CLIP", "AVERAGE)"]
    assert lines[1].split()[:2] == [bad, "ERROR"]
    assert lines[2].split()[:2] == [long, "speech_commands"]
    assert f"{top['label']} {top['score']:.3f}" in lines[2]
    windowed = predict(no_torch, *args, "--windows", "--format", "table").stdout.splitlines()
    assert len(windowed) == 2 + len(windows)
    assert windowed[2].split()[2:4] == ["0.00-1.02", "s"]


def test_bad_usage_exits_2_with_a_message(
    corpus: Path, speech_artifact: Path, no_torch: Path, tmp_path
) -> None:
    nothing = predict(no_torch, str(tmp_path / "missing"), "--models", str(speech_artifact))
    assert nothing.returncode == 2
    assert "missing: no such file" in nothing.stderr and "no files to classify" in nothing.stderr
    wav = str(corpus / "a/0/clip000.wav")
    for args, message in [
        (["--models", str(tmp_path)], "manifest"),
        (["--models", str(speech_artifact), "--heads", "nope"], "unknown head"),
        (["--models", str(speech_artifact), "--shard", "2/2"], "K must be in 0..N-1"),
        (["--models", str(speech_artifact), "--jobs", "0"], "not positive"),
    ]:
        done = predict(no_torch, wav, *args)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr


def test_expansion_is_sorted_unique_and_sharding_covers_it(corpus: Path) -> None:
    files, unmatched = expand_paths([str(corpus / "c"), str(corpus / "c" / "*"), "nope"])
    names = [p.name for p in files]
    assert names == ["garbage.mp3", "notes.txt", "truncated.wav"]  # a glob takes any file
    assert unmatched == ["nope"]
    everything, _ = expand_paths([str(corpus)])
    assert len(everything) == 200
    shards = [select_shard(everything, k, 3) for k in range(3)]
    assert sorted(p for s in shards for p in s) == everything
    assert [len(s) for s in shards] == [67, 67, 66]


@pytest.mark.slow
def test_the_jobs_benchmark_prints_a_row_per_setting(speech_artifact: Path) -> None:
    script = REPO / "benchmarks" / "predict_jobs.py"
    quick = ["--files", "6", "--seconds", "1", "--rounds", "1"]
    done = subprocess.run(
        [sys.executable, str(script), *quick, "--models", str(speech_artifact)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [r[0].strip() for r in rows[1:]] == ["1", "2"]  # after the header row
    assert rows[1][3].strip() == "1.00x" and float(rows[2][1]) > 0


def test_a_terminal_gets_a_progress_bar(speech_artifact: Path, no_torch: Path) -> None:
    """Under a pseudo-terminal (80 columns) stderr shows tqdm's bar, ending at 3/3."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    examples = REPO / "service" / "examples"
    env = {"PYTHONPATH": f"{no_torch}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(REPO)}
    process = subprocess.Popen(
        [*_PREDICT, str(examples), "--models", str(speech_artifact), "--output", os.devnull],
        cwd=REPO,
        env=env,
        stdin=child,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while chunk := os.read(main, 4096):
            shown += chunk
    os.close(main)
    assert process.wait(timeout=300) == 0
    assert b"3/3 [" in shown and b"file/s]" in shown, shown[-500:]
