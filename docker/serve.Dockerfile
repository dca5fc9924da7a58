# Serving image: torch-free, slim, non-root, read-only-root friendly.
#
#   make default-model       # artifacts/speech-commands-synth-b0, baked in below
#   docker build -f docker/serve.Dockerfile -t arinext-serve .
#   docker run --rm -p 8000:8000 --read-only --tmpfs /tmp arinext-serve
#
# Other models: mount artifact directories and list them (comma-separated) in ARINEXT_MODELS:
#   docker run ... -v "$PWD/artifacts/my-model:/models/my-model:ro" \
#       -e ARINEXT_MODELS=/models/my-model,/opt/arinext/models/speech-commands-synth-b0 arinext-serve
#
# Builder and runtime must share the base image: the venv's interpreter is a link into it.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject alone, so editing the sources does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(chr(10).join(p['dependencies'] + p['optional-dependencies']['serve']))" > /tmp/requirements-serve.txt \
 && pip install -r /tmp/requirements-serve.txt

# The package (a wheel built from the sources) with the serve extra; never torch. The CLI
# registers every package's commands, so `arinext --help` proves none of them imports torch.
COPY arinext/ arinext/
COPY model/ model/
COPY training/ training/
COPY service/ service/
RUN pip install ".[serve]" \
 && python -c "import importlib.util, sys; sys.exit('torch found in the serving venv' if importlib.util.find_spec('torch') else 0)" \
 && arinext --help > /dev/null


FROM ${PYTHON_IMAGE} AS runtime

# A fixed uid/gid, so volume permissions and runAsUser policies can name it.
RUN groupadd --gid 10001 arinext \
 && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init \
        --home-dir /tmp --shell /usr/sbin/nologin arinext

COPY --from=builder /opt/venv /opt/venv
# The default model, owned by root and read-only to the service user.
COPY artifacts/speech-commands-synth-b0/ /opt/arinext/models/speech-commands-synth-b0/

# Everything that may write goes to /tmp (a tmpfs when the root filesystem is read-only).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/matplotlib \
    GRADIO_TEMP_DIR=/tmp/gradio \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HOME=/tmp/huggingface \
    ARINEXT_MODELS=/opt/arinext/models/speech-commands-synth-b0 \
    ARINEXT_DEFAULT_MODEL_DIR=/opt/arinext/models/speech-commands-synth-b0 \
    ARINEXT_PORT=8000

WORKDIR /tmp
USER 10001:10001
EXPOSE 8000

# /healthz is liveness (the process answers; /readyz tells when models are warmed up); the start
# period covers interpreter start-up and the import of the serving stack.
# The port follows ARINEXT_PORT, so pass the same value to --port when changing it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ARINEXT_PORT', '8000') + '/healthz', timeout=4)"]

ENTRYPOINT ["arinext", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
