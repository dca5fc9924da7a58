"""The service must run in the slim image: importing or running it never imports torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.service.conftest import REPO


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_importing_the_app_module_leaves_torch_out() -> None:
    result = _run(
        """
        import sys
        import fastapi
        import arinext.service.app
        assert "torch" not in sys.modules, "torch imported"
        assert "gradio" not in sys.modules, "importing builds nothing"
        # for `uvicorn arinext.service.app:app`
        assert isinstance(arinext.service.app.app, fastapi.FastAPI)
        assert "torch" not in sys.modules, "torch imported"
        """
    )
    assert result.returncode == 0, result.stderr


def test_serving_a_request_with_the_demo_leaves_torch_out(speech_artifact: Path) -> None:
    result = _run(
        f"""
        import sys
        import time
        from pathlib import Path
        from fastapi.testclient import TestClient
        from arinext.service.app import create_app
        from arinext.service.settings import Settings
        from tests.service.audio import encode_sf, signal

        settings = Settings(models=[Path({str(speech_artifact)!r})], demo=True)
        with TestClient(create_app(settings)) as client:
            for _ in range(600):
                if client.get("/readyz").status_code == 200:
                    break
                time.sleep(0.05)
            wav = encode_sf(signal(1.0, 16000), 16000, "WAV", "PCM_16")
            headers = {{"content-type": "audio/wav"}}
            response = client.post("/classify", content=wav, headers=headers)
            assert response.status_code == 200, response.text
            assert client.get("/demo/").status_code == 200
        modules = [
            "torch",
            "arinext.model.export",
            "arinext.model.registry",
            "arinext.model.checkpoint",
        ]
        heavy = sorted(m for m in modules if m in sys.modules)
        assert not heavy, heavy
        """
    )
    assert result.returncode == 0, result.stderr


def test_the_python_api_is_framework_free() -> None:
    """``from arinext import Classifier`` classifies without loading the HTTP layer (#34)."""
    from tests.fresh_imports import heavy_imports

    code = (
        "from arinext import Classifier\n"
        "import numpy as np\n"
        "answer = Classifier.from_artifacts(intra_op_threads=1)(np.zeros(16000, np.float32), "
        "sample_rate=16000)\n"
        "assert answer.predictions[0].top_k"
    )
    assert heavy_imports(code, ("fastapi", "starlette", "uvicorn", "gradio", "torch")) == []
