"""A small model learns a generated, separable task through the real CLI.

How long it takes is not asserted (tests assert behaviour); CI's time budget bounds the suite.
"""

from __future__ import annotations

import json

import yaml

from arinext.training.checkpoints import load_checkpoint
from tests.training.conftest import TrainedRun


def test_tiny_model_learns_separable_sounds(trained_run: TrainedRun) -> None:
    run = trained_run.path
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 9))
    best = load_checkpoint(run / "best.pt")
    assert best["metrics"]["top1"] >= 0.95, records
    assert best["best"]["value"] == max(r["val_top1"] for r in records)
    for name in ("config.yaml", "last.pt", "metrics.csv", "curves.png", "train.log"):
        assert (run / name).is_file(), name
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["audio"]["num_frames"] == 50 and saved["init"] == "none"
