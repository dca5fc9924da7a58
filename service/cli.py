"""``arinext serve``: run the inference service with uvicorn.

Registering imports nothing heavy (no uvicorn, FastAPI or ONNX Runtime) so that ``arinext --help``
stays fast; the command body imports what it runs. Command-line options override the
``ARINEXT_*`` environment, which fills in everything else.

It runs uvicorn with the header and connection limits of :mod:`arinext.service.http_limits`, which
plain ``uvicorn arinext.service.app:app`` does not have.

There is deliberately no ``--workers``: the batcher needs all requests in one process to form
batches, and metrics live per process; scale out with more replicas instead.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arinext.service.settings import Settings

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve artifacts over HTTP (POST /classify, /models, /demo, /metrics)",
        description="Serve one or more artifact directories (model.onnx + manifest.json). "
        "Every option also has an ARINEXT_* environment variable.",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="artifact directories (default: $ARINEXT_MODELS, else the embedded model)",
    )
    parser.add_argument("--host", help="bind address (default: $ARINEXT_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $ARINEXT_PORT or 8000)")
    parser.add_argument("--no-demo", action="store_true", help="do not mount the Gradio demo")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from arinext.service.settings import Settings

    overrides = {
        key: value
        for key, value in (("models", args.models), ("host", args.host), ("port", args.port))
        if value is not None
    }
    if args.no_demo:
        overrides["demo"] = False
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:  # one line per problem, not a traceback
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"arinext serve: invalid settings: {problems.strip(': ')}") from None
    run(settings)
    return 0


def run(settings: Settings) -> None:
    """Serve ``create_app(settings)`` with uvicorn and the limits of
    :mod:`arinext.service.http_limits`;
    returns after a SIGTERM has stopped the server gracefully (exit status 0)."""
    from arinext.service.app import create_app

    def factory() -> Any:
        return create_app(settings)

    logger.info("serving on http://%s:%d", settings.host, settings.port)
    # uvicorn re-raises the SIGTERM it handled once it has shut down, which would kill the
    # process by signal: atexit handlers (the demo's upload folder) would never run.
    previous = signal.signal(signal.SIGTERM, _exit_after_sigterm)
    try:
        _run_uvicorn(factory, settings)
    finally:
        if previous is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGTERM, previous)


def _exit_after_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside uvicorn's own handling (uvicorn's re-raise once it has stopped, or one
    before it started): exit 0 through the interpreter's normal exit."""
    logger.info("stopped on SIGTERM")
    raise SystemExit(0)


def _run_uvicorn(factory: Callable[[], Any], settings: Settings) -> None:
    import uvicorn

    from arinext.service.http_limits import limited_protocol

    uvicorn.run(
        factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        proxy_headers=False,
        server_header=False,
        # WebSocket messages of every kind: refused (1009) by the protocol before it buffers
        # more, rather than after uvicorn's own 16 MiB.
        ws_max_size=settings.stream_max_message_bytes,
        http=limited_protocol(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout=settings.header_timeout_seconds,
            max_connections=settings.max_connections,
        ),
    )
