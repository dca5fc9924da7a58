"""Schemathesis over the server's own OpenAPI document: no request it generates gets a 5xx.

The document includes ``/v2``'s inference body (:mod:`arinext.service.v2_schema`), so the fuzzer
sends requests that are valid in shape but hostile in content (huge shapes, odd parameters), and
ones that break the schema. A bounded number of examples per operation keeps it short.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import ServerProcess, run_server

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")
GenerationMode = schemathesis.GenerationMode

NAME = "tiny-speech-commands"

EXAMPLES = 40


@pytest.fixture(scope="module")
def fuzzed_server(
    speech_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with run_server(
        tmp_path_factory.mktemp("fuzz"), models=speech_artifact, max_queue_ms=0
    ) as process:
        yield process


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")


def test_the_inference_body_is_in_the_openapi_document(api_schema: Any) -> None:
    operation = api_schema["/v2/models/{name}/infer"]["POST"]
    body = operation.definition.raw["requestBody"]["content"]["application/json"]["schema"]
    assert {"inputs", "outputs", "parameters"} <= set(body["properties"])


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_generated_request_gets_a_5xx(api_schema: Any, mode: str) -> None:
    """Requests that fit the schema, then ones that break it; ``{name}`` is always the served
    model, so that bodies reach the handler (unknown names are 404s before the body is read)."""
    # Hypothesis driven directly: schemathesis's pytest integration does not run on pytest 9.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert any(op.path == "/v2/models/{name}/infer" for op in operations)
    statuses: Counter[str] = Counter()

    for operation in operations:
        strategy = operation.as_strategy(
            generation_mode=GenerationMode(mode),
            path_parameters={"name": NAME} if "{name}" in operation.path else None,
        )

        @hypothesis.given(case=strategy)
        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def no_5xx(case: Any) -> None:
            response = case.call(timeout=30)
            assert response.status_code < 500, (case.method, case.path, response.text[:500])
            statuses[f"{case.method} {case.path} {response.status_code}"] += 1

        with contextlib.suppress(hypothesis.errors.Unsatisfiable):  # no negative form exists
            no_5xx()
    # The inference body was reached: its own refusals, not only the route's 404.
    infer = {k: n for k, n in statuses.items() if k.startswith("POST /v2/models/{name}/infer")}
    assert any(not k.endswith(" 404") for k in infer), statuses
