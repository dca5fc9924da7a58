"""Per-epoch metrics of a run: ``metrics.jsonl`` (the record), ``metrics.csv`` and ``curves.png``.

JSON lines are appended as epochs finish, so a crashed run keeps its history; the CSV is
rewritten from them (columns can appear later, e.g. validation metrics on evaluation epochs).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["append", "plot_curves", "read", "truncate"]

JSONL = "metrics.jsonl"
CSV = "metrics.csv"
PLOT = "curves.png"


def read(run_dir: Path) -> list[dict[str, Any]]:
    """All epoch records so far."""
    path = run_dir / JSONL
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_csv(run_dir: Path, records: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for record in records:
        columns.extend(k for k in record if k not in columns)
    with (run_dir / CSV).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def append(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one epoch's record and refresh the CSV."""
    with (run_dir / JSONL).open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    _write_csv(run_dir, read(run_dir))


def truncate(run_dir: Path, last_epoch: int) -> None:
    """Forget records after ``last_epoch`` (a resumed run redoes those epochs)."""
    records = [r for r in read(run_dir) if r.get("epoch", 0) <= last_epoch]
    (run_dir / JSONL).write_text("".join(json.dumps(r) + "\n" for r in records))
    _write_csv(run_dir, records)


def plot_curves(run_dir: Path, accuracy_keys: tuple[str, ...] = ()) -> Path | None:
    """Loss and accuracy against epoch, as ``curves.png`` (matplotlib's headless Agg backend)."""
    records = read(run_dir)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [
            (r["epoch"], r[key])
            for r in records
            if isinstance(r.get(key), int | float) and math.isfinite(r[key])
        ]
        return [p[0] for p in points], [p[1] for p in points]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(*series("train_loss"), marker="o", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    for key in accuracy_keys:
        xs, ys = series(key)
        if xs:
            ax_acc.plot(xs, ys, marker="o", label=key)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    path = run_dir / PLOT
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
