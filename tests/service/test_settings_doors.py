"""Settings refuse what would run silently wrong (issue 38, door 7), at start, in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.service.conftest import REPO, server_env


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("queue_sze", "8", "ARINEXT_QUEUE_SZE (did you mean ARINEXT_QUEUE_SIZE?)"),
        ("intra_op_threads", "100000", "intra_op_threads: Value error, 100000 threads"),
        ("worker_threads", "100000", "worker_threads: Value error, 100000 threads"),
    ],
)
def test_arinext_serve_refuses_unknown_names_and_absurd_thread_counts(
    setting: str, value: str, said: str
) -> None:
    env = server_env(**{setting: value})
    command = [sys.executable, "-m", "arinext", "serve", "--no-demo", "--port", "0"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr
