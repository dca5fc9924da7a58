"""Servers that do no work, for ``service_load.py --floor``: what HTTP itself costs here.

Each reads the whole uploaded body and answers a fixed JSON document about the size of a real
``/classify`` answer, so the difference between them and ``arinext serve`` is the service's own
work (decoding, features, batching, scoring), and the floor is what any server built on uvicorn
(``bare``) or on FastAPI (``fastapi_app``) pays per request before doing anything. Run as
``uvicorn benchmarks.floor_apps:bare`` or ``benchmarks.floor_apps:fastapi_app``.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

__all__ = ["ANSWER", "bare", "fastapi_app"]

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
