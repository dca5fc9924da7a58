"""The modules the service imports must not pull in torch (the serving image has none)."""

from __future__ import annotations

from tests.fresh_imports import heavy_imports


def test_service_side_modules_do_not_import_torch() -> None:
    code = (
        "import arinext.model.audio_config, arinext.model.frontend, arinext.model.labels, "
        "arinext.model.manifest"
    )
    assert heavy_imports(code, ("torch", "onnx", "yaml")) == []
