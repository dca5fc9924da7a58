"""What a change did to the service's HTTP cost: two checkouts served side by side, one run.

Serves the working tree and a git revision (``--base``, checked out into a temporary worktree)
with the same model, both pinned to the same core, and drives each in turn with ``wrk`` from
the other core, round by round (concurrency 1 and 16), so the machine's drift hits both alike.
Prints each side's throughput and median p50 and their ratios; a ratio away from 1 by more than
the spread between rounds is the change's own effect. Needs ``git`` and ``wrk``.

    python benchmarks/service_ab.py --base HEAD~1 [--rounds 5] [--seconds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a plain checkout

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.service_load import (  # noqa: E402
    BATCH,
    DEFAULT_ARTIFACT,
    DEFAULT_CLIP,
    WrkSeries,
    _pin,
    _server,
    _wrk,
)

CONCURRENCIES = (1, BATCH)


@contextlib.contextmanager
def _worktree(revision: str) -> Iterator[Path]:
    """A detached checkout of ``revision`` in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="arinext-ab-") as parent:
        path = Path(parent) / "base"
        git = ["git", "-C", str(REPO)]
        subprocess.run(
            [*git, "worktree", "add", "--detach", "--quiet", str(path), revision],
            check=True,
        )
        try:
            yield path
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)
            subprocess.run([*git, "worktree", "prune"], check=False)


def _rounds(urls: dict[str, str], clip: Path, rounds: int, seconds: float) -> dict:
    """``{(side, concurrency): WrkSeries}`` over interleaved rounds (one unmeasured first)."""
    series = {(side, c): WrkSeries() for side in urls for c in CONCURRENCIES}
    for url in urls.values():
        _wrk(url, clip, BATCH, 1, WrkSeries())  # warm-up
    for _ in range(rounds):
        for side, url in urls.items():
            for c in CONCURRENCIES:
                _wrk(url, clip, c, seconds, series[side, c])
    return series


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="model to serve")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="audio file to send")
    parser.add_argument("--seconds", type=float, default=4, help="wrk seconds per mode and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--server-core", type=int, default=0, help="core for both servers")
    parser.add_argument("--load-core", type=int, default=1, help="core for wrk")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("needs wrk (Debian: apt-get install wrk)")
    pinned = (os.cpu_count() or 1) >= 2
    core = args.server_core if pinned else None
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(_worktree(args.base))
        revision = subprocess.run(
            ["git", "-C", str(base), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        urls = {
            "base": stack.enter_context(_server(args.artifact, core, {}, base))[0],
            "working tree": stack.enter_context(_server(args.artifact, core, {}, REPO))[0],
        }
        _pin({args.load_core} if pinned else None)  # wrk inherits this affinity
        series = _rounds(urls, args.clip, args.rounds, args.seconds)

    print(f"# Service A/B: working tree against {args.base} ({revision})")
    print()
    print(f"- machine: {cpu_model()}, {os.cpu_count()} CPUs; model {args.artifact.name}")
    where = f"both servers on core {args.server_core}, wrk on core {args.load_core}"
    print(
        f"- {where if pinned else 'not pinned'}; {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s per side and concurrency"
    )
    print()
    print(
        "| concurrency | base req/s | working tree req/s | ratio | base p50 ms | "
        "working tree p50 ms | ratio | p50 spread over rounds (base, tree) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in CONCURRENCIES:
        old, new = series["base", c], series["working tree", c]
        spread = [float(np.ptp(s.p50s) / np.median(s.p50s)) for s in (old, new)]
        print(
            f"| {c} | {old.rate:.1f} | {new.rate:.1f} | {new.rate / old.rate:.3f} | "
            f"{old.p(50):.3f} | {new.p(50):.3f} | {new.p(50) / old.p(50):.3f} | "
            f"{spread[0]:.1%}, {spread[1]:.1%} |"
        )
    failures = sum(s.failures for s in series.values())
    print()
    print(f"- non-200 answers: {failures}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
