"""The streaming pipeline's parts: windows, decoders and the detection debouncer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from arinext.model.audio_config import PRESETS
from arinext.model.audio_io import decode, resample
from arinext.service.detection import Debouncer
from arinext.service.streams.audio import PcmDecoder, WebmDecoder, Windower
from arinext.service.streams.protocol import (
    CLOSE_INVALID_DATA,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    StreamError,
    is_keyword,
)
from tests.service.audio import encode_av, signal

T = TypeVar("T")
SPEECH = PRESETS["speech_commands"]  # 16 kHz, 1.023 s views


def _chunks(x: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """``x`` split at random points, as network messages would split it."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=len(x) // 500, replace=False))
    return np.split(x, cuts)


@pytest.mark.parametrize("input_rate", [16000, 48000, 44100])
def test_windows_every_hop_are_the_one_shot_resampled_slices(input_rate: int) -> None:
    x = signal(3.4, input_rate)[:, 0]
    windower = Windower(SPEECH, input_rate, hop_seconds=0.25)
    chunks = _chunks(x)
    windows = [w for c in chunks[:-1] for w in windower.push(c)]
    windows += windower.push(chunks[-1], last=True)
    reference = resample(x, input_rate, SPEECH.sample_rate)
    view, hop = SPEECH.clip_samples, 4000
    total = len(reference)
    expected = list(range(view, total + 1, hop))
    assert [w.end for w in windows[:-1]] == expected
    assert windows[-1].end == total and windows[-1].start == total - view  # the tail is scored
    for window in windows:
        assert window.end - window.start == view
        np.testing.assert_allclose(window.samples, reference[window.start : window.end], atol=1e-6)


@pytest.mark.parametrize("hop_seconds", [0.1, 0.25, 2.0])
def test_windows_hold_the_stream_whatever_the_message_sizes(hop_seconds: float) -> None:
    # Messages of one sample, of a few hundred, and of several views at once (past the
    # windower's buffer, which must grow and compact without losing a sample).
    rng = np.random.default_rng(1)
    x = rng.standard_normal(16000 * 9).astype(np.float32)
    sizes = [1, 3, 700, 1600, 50_000, 2, 1600, 40_000, 333]
    cuts = np.cumsum(sizes * 3)
    chunks = np.split(x, cuts[cuts < len(x)])
    windower = Windower(SPEECH, 16000, hop_seconds=hop_seconds)
    windows = [w for c in chunks[:-1] for w in windower.push(c)]
    windows += windower.push(chunks[-1], last=True)
    assert windows[-1].end == len(x)
    assert len({w.end for w in windows}) == len(windows)
    for window in windows:
        np.testing.assert_array_equal(window.samples, x[window.start : window.end])


def test_a_stream_shorter_than_a_view_is_one_whole_window() -> None:
    windower = Windower(SPEECH, 16000, hop_seconds=0.25)
    assert windower.push(np.ones(4000, np.float32)) == []
    (window,) = windower.push(np.ones(2000, np.float32), last=True)
    assert (window.start, window.end, len(window.samples)) == (0, 6000, 6000)


def test_no_extra_window_when_the_stream_ends_on_a_window() -> None:
    windower = Windower(SPEECH, 16000, hop_seconds=0.5)
    view = SPEECH.clip_samples
    windows = windower.push(np.zeros(view + 8000, np.float32), last=True)
    assert [w.end for w in windows] == [view, view + 8000]


def test_debouncer_detects_each_utterance_once() -> None:
    d = Debouncer("speech", hop=0.25, threshold=0.5, debounce=1.0, votes=2)
    votes = [
        ("_silence_", 0.99),  # never a keyword, however confident
        ("up", 0.95),  # one window alone (the tail of other speech): no run of two
        ("_unknown_", 0.9),
        ("yes", 0.4),  # below the threshold, but the first vote of a run
        ("yes", 0.9),  # the run's second vote and above the threshold: detected
        ("yes", 0.95),
        ("no", 0.4),  # another word, too weak...
        ("no", 0.45),  # ...all along its run: not detected
        ("yes", 0.8),  # yes again 0.5 s after its last vote: the same utterance
        ("yes", 0.8),
        ("_silence_", 0.9),
        ("_silence_", 0.9),
        ("_silence_", 0.9),
        ("_silence_", 0.9),
        ("yes", 0.9),  # four windows (1 s) without a yes vote: a new utterance
        ("yes", 0.9),
    ]
    found = []
    for i, (label, score) in enumerate(votes):
        detection = d.update(label, score, start=i * 0.25, end=i * 0.25 + 1)
        if detection is not None:
            found.append((i, detection.label, detection.start, detection.score))
    # Each detection is its run's first window, with the run's best score so far.
    assert found == [(4, "yes", 0.75, 0.9), (15, "yes", 3.5, 0.9)]


def test_a_recording_of_one_window_has_one_vote_to_give() -> None:
    from arinext.service.detection import detect

    probs = np.array([[0.1, 0.9]])
    (event,) = detect("speech", ["_silence_", "yes"], probs, [(0.0, 1.0)], hop=1.0, threshold=0.5,
                      debounce=1.0)  # fmt: skip
    assert (event.label, event.start, event.end) == ("yes", 0.0, 1.0)


def test_labels_starting_with_underscore_are_not_keywords() -> None:
    assert not is_keyword("_silence_") and not is_keyword("_unknown_")
    assert is_keyword("yes") and is_keyword("marvin")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_pcm_decoder_keeps_split_frames_and_downmixes() -> None:
    x = signal(0.5, 8000, channels=2)
    pcm = (x * 32767).astype("<i2")
    data = pcm.tobytes()

    async def decode_all() -> np.ndarray:
        decoder = PcmDecoder("s16le", channels=2, sample_rate=8000)
        parts = [await decoder.decode(data[i : i + 333]) for i in range(0, len(data), 333)]
        parts.append(await decoder.finish())
        return np.concatenate(parts)

    mono = _run(decode_all())
    np.testing.assert_allclose(mono, pcm.astype(np.float32).mean(axis=1) / 32768, atol=1e-7)


def test_pcm_decoder_refuses_nan_and_a_cut_frame() -> None:
    async def feed(fmt: str, data: bytes) -> None:
        decoder = PcmDecoder(fmt, channels=1, sample_rate=16000)
        await decoder.decode(data)
        await decoder.finish()

    nan = np.array([0.1, np.nan, 0.2], dtype="<f4").tobytes()
    with pytest.raises(StreamError, match="NaN") as error:
        _run(feed("f32le", nan))
    assert error.value.close_code == CLOSE_INVALID_DATA
    with pytest.raises(StreamError, match="inside a sample frame"):
        _run(feed("f32le", b"\x00" * 6))


def test_webm_opus_decodes_incrementally_like_the_whole_file() -> None:
    x = signal(2.0, 48000)
    webm = encode_av(x, 48000, "webm", "libopus")

    async def decode_chunks() -> tuple[list[int], np.ndarray, int | None]:
        decoder = WebmDecoder(None, niceness=0, max_pending_samples=10**7)
        sizes, parts = [], []
        for i in range(0, len(webm), 2000):
            parts.append(await decoder.decode(webm[i : i + 2000]))
            sizes.append(sum(len(p) for p in parts))
        parts.append(await decoder.finish())
        return sizes, np.concatenate(parts), decoder.sample_rate

    sizes, samples, rate = _run(decode_chunks())
    whole = decode(webm, max_seconds=10)
    assert rate == 48000
    np.testing.assert_allclose(samples, whole.samples, atol=1e-6)
    # Audio comes out while the bytes arrive, not only at the end.
    assert sizes[len(sizes) // 2] > 0.3 * len(whole.samples)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="nice levels are a Unix feature")
def test_webm_decoding_thread_runs_below_the_event_loop() -> None:
    """Decoding is CPU work of one client's choosing: niced, as the preparation threads are."""
    webm = encode_av(signal(2.0, 48000), 48000, "webm", "libopus")

    async def niceness_while_decoding() -> int:
        decoder = WebmDecoder(None, niceness=4, max_pending_samples=10**7)
        try:
            await decoder.decode(webm[: len(webm) // 2])  # the thread now waits for more bytes
            thread = decoder._thread
            assert thread is not None and thread.native_id is not None
            return os.getpriority(os.PRIO_PROCESS, thread.native_id)
        finally:
            decoder.close()

    assert _run(niceness_while_decoding()) == min(os.getpriority(os.PRIO_PROCESS, 0) + 4, 19)


def test_webm_stops_decoding_a_message_that_expands_past_the_bound() -> None:
    """Opus silence is a few bytes a frame: 9.6 kB decodes to 20 s. The thread stops once the
    audio not yet taken passes the bound, instead of holding all of it."""
    webm = encode_av(np.zeros((20 * 48000, 1), np.float32), 48000, "webm", "libopus")

    async def feed_small(step: int) -> int:
        decoder = WebmDecoder(None, niceness=0, max_pending_samples=48000)
        try:
            taken = 0
            for i in range(0, len(webm), step):
                taken += len(await decoder.decode(webm[i : i + step]))
            return taken + len(await decoder.finish())
        finally:
            decoder.close()

    whole: list[WebmDecoder] = []

    async def feed_whole() -> None:
        decoder = WebmDecoder(None, niceness=0, max_pending_samples=48000)
        whole.append(decoder)
        try:
            await decoder.decode(webm)
        finally:
            decoder.close()

    with pytest.raises(StreamError, match="more than 48000 samples") as error:
        _run(feed_whole())
    assert error.value.close_code == CLOSE_TOO_BIG and error.value.code == "message_too_big"
    held = sum(len(block) for block in whole[0]._blocks)
    assert 48000 < held <= 48000 + 960  # stopped at the first 20 ms frame past the bound
    # The same stream in small messages (each taken as it comes) decodes whole.
    assert _run(feed_small(300)) == 20 * 48000


def test_webm_refuses_garbage_other_codecs_and_a_wrong_declared_rate() -> None:
    async def feed(data: bytes, declared: int | None = None) -> None:
        decoder = WebmDecoder(declared, niceness=0, max_pending_samples=10**7)
        try:
            await decoder.decode(data)
            await decoder.finish()
        finally:
            decoder.close()

    with pytest.raises(StreamError) as error:
        _run(feed(b"\x1a\x45\xdf\xa3" + b"garbage" * 100))
    assert error.value.code == "invalid_audio"
    vorbis_rate = encode_av(signal(0.5, 48000), 48000, "webm", "libopus")
    with pytest.raises(StreamError, match="wrong sample rate") as error:
        _run(feed(vorbis_rate, declared=16000))
    assert error.value.close_code == CLOSE_INVALID_DATA
    flac = encode_av(signal(0.5, 16000), 16000, "matroska", "flac")
    with pytest.raises(StreamError, match="Opus or Vorbis") as error:
        _run(feed(flac))
    assert error.value.close_code == CLOSE_UNSUPPORTED


def test_a_run_that_never_ends_costs_the_same_every_window() -> None:
    """A sound the model keeps calling one word below the threshold (an hour of windows) keeps
    the debouncer's state constant: no list of votes grows with the run."""
    d = Debouncer("speech", hop=0.25, threshold=0.99, debounce=1.0, votes=2)
    for i in range(14_400):  # an hour at hop 0.25 s
        assert d.update("up", 0.6, i * 0.25, i * 0.25 + 1.0) is None
    assert all(not isinstance(value, list) for value in vars(d).values())
    found = d.update("up", 0.995, 3600.0, 3601.0)  # the run finally crosses the threshold
    assert found is not None and (found.start, found.end, found.score) == (0.0, 1.0, 0.995)
