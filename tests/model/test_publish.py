"""Publishing an artifact replaces the old one in one atomic step: never a moment with none."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from arinext.model.audio_config import get_preset
from arinext.model.manifest import MANIFEST_FILE, MODEL_FILE, HeadSpec, Manifest, verify_artifact
from arinext.model.publish import exchange, publish_artifact


def _manifest(data: bytes) -> Manifest:
    return Manifest(
        name="tiny",
        architecture="b0",
        reparameterized="full",
        frontend=get_preset("speech_commands"),
        heads=[HeadSpec(name="kw", output="logits_kw", labels=["yes", "no"])],
        num_params=1,
        gflops=0.0,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def test_exchange_swaps_two_directories(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("from a")
    (b / "y").write_text("from b")
    assert exchange(a, b)  # Linux with glibc >= 2.28 on ext4/tmpfs/overlayfs, as in CI
    assert (a / "y").read_text() == "from b" and (b / "x").read_text() == "from a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_replacing_never_leaves_a_moment_without_an_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After every rename publishing does, ``out`` holds a complete artifact (checked in step)."""
    out = tmp_path / "artifact"
    publish_artifact(out, b"version 0", _manifest(b"version 0"))
    gaps: list[str] = []
    rename = Path.rename

    def watched(self: Path, target: str | Path) -> Path:
        result = rename(self, target)
        if not ((out / MANIFEST_FILE).is_file() and (out / MODEL_FILE).is_file()):
            gaps.append(f"{self.name} -> {Path(target).name}")
        return result

    monkeypatch.setattr(Path, "rename", watched)
    for version in range(1, 4):
        data = f"version {version}".encode()
        publish_artifact(out, data, _manifest(data))
        assert (out / MODEL_FILE).read_bytes() == data
    assert gaps == []
    verify_artifact(out)
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # no staging or retired dirs
