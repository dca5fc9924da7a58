"""The golden fixtures are present in the clone and identical to the shared originals."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from tests.fixtures import GOLDEN, SHARED_REFERENCE

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fixture", GOLDEN, ids=lambda p: p.name)
def test_fixture_is_in_the_clone(fixture: Path) -> None:
    # No skip: a golden test without its fixture must fail, not pass vacuously.
    assert fixture.is_file() and fixture.stat().st_size > 0, f"{fixture} is missing"


@pytest.mark.parametrize("fixture", GOLDEN, ids=lambda p: p.name)
def test_fixture_equals_the_shared_reference(fixture: Path) -> None:
    original = SHARED_REFERENCE / fixture.name
    if not SHARED_REFERENCE.is_dir():
        # A user's clone has no ../shared: the copy in tests/fixtures is the reference then.
        pytest.skip(f"{SHARED_REFERENCE} is not beside this clone")
    assert original.is_file(), f"{original} disappeared from the shared reference"
    assert filecmp.cmp(fixture, original, shallow=False), f"{fixture} differs from {original}"


def test_bundled_labels_equal_the_shared_reference() -> None:
    labels = SHARED_REFERENCE / "labels"
    if not labels.is_dir():
        pytest.skip(f"{labels} is not beside this clone")
    originals = sorted(labels.glob("*.json"))
    assert originals
    for original in originals:
        bundled = REPO / "model" / "labels" / original.name
        assert filecmp.cmp(bundled, original, shallow=False), f"{bundled} differs from {original}"
