"""Servers for ``service_load.py --floor``: what HTTP itself costs here, and what FastAPI does.

``bare`` and ``fastapi_app`` do no work: each reads the whole uploaded body and answers a fixed
JSON document about the size of a real ``/classify`` answer, so the difference between them and
``arinext serve`` is the service's own work (decoding, features, batching, scoring), and the
floor is what any server built on uvicorn (``bare``) or on FastAPI (``fastapi_app``) pays per
request before doing anything. Run as ``uvicorn benchmarks.floor_apps:bare`` or
``benchmarks.floor_apps:fastapi_app``.

``python -m benchmarks.floor_apps --models DIR --port N`` is ``arinext serve`` (same settings,
protocol limits and models) with :func:`without_fastapi` around its app: a raw-body
``POST /classify`` without a query string goes straight to the prediction pipeline, past
FastAPI's routing, Starlette's middleware and arinext's own three. Set against ``arinext serve``
in the same rounds, it measures what that stack costs per request. It is a measurement only: the
skipped layers are the service's limits, admission, metrics and error answers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ANSWER", "bare", "fastapi_app", "without_fastapi"]

ANSWER = json.dumps(
    {
        "duration": 1.0,
        "predictions": [
            {
                "head": "speech_commands",
                "model": "speech-commands-synth-b0",
                "top_k": [{"label": f"label{i}", "index": i, "score": 0.1} for i in range(5)],
            }
        ],
        "timing_ms": {"decode": 0.1, "features": 0.1, "inference": 0.1, "total": 0.3},
    }
).encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI app: read the body, send the answer."""
    if scope["type"] != "http":  # lifespan: nothing to start
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


fastapi_app = FastAPI()


@fastapi_app.post("/classify")
async def classify(request: Request) -> Response:
    """The same through FastAPI's routing, a ``Request`` and ``await request.body()``."""
    await request.body()
    return Response(ANSWER, media_type="application/json")


def without_fastapi(app: FastAPI) -> ASGIApp:
    """``app`` with a raw-body ``POST /classify`` (no query string) answered by the pipeline
    itself (:func:`service.predict.classify`, default parameters); anything else, the lifespan
    and ``/readyz`` included, goes to ``app``."""
    from service.http_limits import received_at
    from service.predict import classify

    settings = app.state.settings
    service = app.state.models

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/classify"
            and not scope["query_string"]
        ):
            await app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        outcome = await classify(
            service,
            b"".join(chunks),
            heads=None,
            top_k=5,
            windows=False,
            max_duration=settings.max_duration_seconds,
            max_windows=settings.max_windows,
            received=received_at(scope),
        )
        body = outcome.response.model_dump_json(exclude_none=True).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return outer


def main() -> None:
    """``arinext serve --no-demo`` of ``--models`` with :func:`without_fastapi` around the app."""
    from service.cli import run
    from service.settings import Settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--models", nargs="+", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run(Settings(models=args.models, port=args.port, demo=False), wrap=without_fastapi)


if __name__ == "__main__":
    main()
