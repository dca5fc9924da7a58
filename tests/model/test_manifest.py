"""The artifact format: what the service refuses to load must raise ArtifactError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arinext.model.audio_config import get_preset
from arinext.model.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    MODEL_FILE,
    ArtifactError,
    HeadSpec,
    Manifest,
    Provenance,
    read_manifest,
    sha256_file,
    verify_artifact,
    write_manifest,
)


def _artifact(directory: Path) -> Manifest:
    """A minimal artifact whose model file is stand-in bytes (the format does not parse it)."""
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    model_path.write_bytes(b"not really onnx, but hashed all the same")
    manifest = Manifest(
        name="tiny",
        architecture="b0",
        reparameterized="full",
        frontend=get_preset("epic_kitchens_100"),
        heads=[
            HeadSpec(name="verb", output="logits_verb", labels=["take", "put"]),
            HeadSpec(name="noun", output="logits_noun", labels=["cup", "pan", "tap"]),
        ],
        num_params=123,
        gflops=0.5,
        sha256=sha256_file(model_path),
        provenance=Provenance(source="unit test", command="pytest", arinext_version="0.1.0"),
        metrics={"top1": 0.5},
        extra={"recipe": {"epochs": 1}},
    )
    write_manifest(directory, manifest)
    return manifest


def _rewrite(directory: Path, **changes: object) -> None:
    path = directory / MANIFEST_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.update(changes)
    path.write_text(json.dumps(raw), encoding="utf-8")


def test_round_trip(tmp_path: Path) -> None:
    written = _artifact(tmp_path)
    read = verify_artifact(tmp_path)
    assert read == written
    assert read.format_version == FORMAT_VERSION
    assert read.frontend == get_preset("epic_kitchens_100")
    assert read.head("noun").labels == ["cup", "pan", "tap"]
    with pytest.raises(KeyError):
        read.head("missing")


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    _artifact(tmp_path)
    with (tmp_path / MODEL_FILE).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        verify_artifact(tmp_path)


def test_missing_model_file_is_refused(tmp_path: Path) -> None:
    _artifact(tmp_path)
    (tmp_path / MODEL_FILE).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        verify_artifact(tmp_path)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no manifest"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match="unreadable"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1", None])
def test_unsupported_format_version_is_refused(tmp_path: Path, version: object) -> None:
    _artifact(tmp_path)
    _rewrite(tmp_path, format_version=version)
    with pytest.raises(ArtifactError, match="format_version"):
        read_manifest(tmp_path)


def test_format_version_2_is_refused(tmp_path: Path) -> None:
    assert FORMAT_VERSION == 1
    _artifact(tmp_path)
    _rewrite(tmp_path, format_version=2)
    with pytest.raises(ArtifactError, match="not supported"):
        verify_artifact(tmp_path)


def _head(name: str, output: str, labels: list[str] | None = None) -> dict[str, object]:
    head: dict[str, object] = {"name": name, "output": output}
    if labels is not None:
        head["labels"] = labels
    return head


@pytest.mark.parametrize(
    "heads",
    [
        pytest.param([_head("a", "out_a", ["x"]), _head("a", "out_b", ["y"])], id="duplicate-name"),
        pytest.param([_head("a", "out", ["x"]), _head("b", "out", ["y"])], id="duplicate-output"),
        pytest.param([_head("a", "out_a")], id="missing-labels"),
        pytest.param([_head("a", "out_a", [])], id="empty-labels"),
        pytest.param([], id="no-heads"),
        pytest.param([_head("bad name", "out_a", ["x"])], id="bad-head-name"),
    ],
)
def test_schema_errors_are_artifact_errors(tmp_path: Path, heads: list[dict[str, object]]) -> None:
    _artifact(tmp_path)
    _rewrite(tmp_path, heads=heads)
    with pytest.raises(ArtifactError, match="invalid manifest"):
        read_manifest(tmp_path)


def test_unknown_fields_are_refused(tmp_path: Path) -> None:
    _artifact(tmp_path)
    _rewrite(tmp_path, surprise=True)
    with pytest.raises(ArtifactError, match="invalid manifest"):
        read_manifest(tmp_path)


def test_bad_sha256_is_refused(tmp_path: Path) -> None:
    _artifact(tmp_path)
    _rewrite(tmp_path, sha256="abc")
    with pytest.raises(ArtifactError, match="invalid manifest"):
        read_manifest(tmp_path)


def test_a_manifest_listing_the_retired_smoothing_switched_off_still_loads(tmp_path: Path) -> None:
    """Log-mel smoothing was removed; a manifest that lists it off is the plain front-end, and
    one that smoothed is refused, as any unknown field is."""
    written = _artifact(tmp_path)
    raw = json.loads((tmp_path / MANIFEST_FILE).read_text(encoding="utf-8"))
    raw["frontend"]["smooth_frames"] = 1
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(raw), encoding="utf-8")
    assert verify_artifact(tmp_path).frontend == written.frontend
    raw["frontend"]["smooth_frames"] = 3
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ArtifactError, match="smooth_frames"):
        read_manifest(tmp_path)
