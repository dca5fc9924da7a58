"""The top of the layering: the ``arinext`` command line and the Python API.

``model`` (network, front-end, artifact format) is the bottom; ``training`` and ``service`` build
on it; this package gathers their sub-commands, so nothing below it imports upwards.

``from arinext import Classifier`` is :class:`arinext.service.pipeline.Classifier`, imported on
first use so that the command line does not load ONNX Runtime for commands that do not need it.
"""

from typing import Any

__all__ = ["Classifier"]


def __getattr__(name: str) -> Any:
    if name == "Classifier":
        from arinext.service.pipeline import Classifier

        return Classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
