"""The service reports the installed package's version, not a number written in the code."""

from __future__ import annotations

from importlib import metadata

from arinext.service.app import create_app
from tests.service.conftest import isolated_settings


def test_app_version_is_the_package_metadata() -> None:
    app = create_app(isolated_settings())
    assert app.version == metadata.version("arinext")
    assert app.openapi()["info"]["version"] == metadata.version("arinext")
