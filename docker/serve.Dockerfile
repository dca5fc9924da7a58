# Serving image: torch-free, slim, non-root, read-only-root friendly. Two variants, one file:
#
#   make image               # both, with podman (see the Makefile for the flags it needs here)
#   docker build -f docker/serve.Dockerfile -t arinext-api .                  # API only
#   docker build -f docker/serve.Dockerfile -t arinext-serve \
#       --build-arg LOCK=demo --build-arg ARINEXT_DEMO=true .                 # API + /demo
#   docker run --rm -p 8000:8000 --read-only --tmpfs /tmp --cap-drop ALL arinext-api
#
# Other models: mount artifact directories and list them (comma-separated) in ARINEXT_MODELS:
#   docker run ... -v "$PWD/artifacts/my-model:/models/my-model:ro" \
#       -e ARINEXT_MODELS=/models/my-model,/opt/arinext/models/speech-commands-b0 arinext-api
#
# Builder and runtime must share the base image: the venv's interpreter is a link into it. Where
# no registry is reachable, `docker/make-base` makes a Debian base locally (PYTHON_IMAGE).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# requirements/serve.txt (the API) or requirements/demo.txt (the API and the Gradio demo).
ARG LOCK=serve
ARG ARINEXT_DEMO=false

# pip trusts the system's CA bundle, which a build behind a TLS-intercepting proxy can replace
# by mounting the host's (see the Makefile); this stage's ENV does not reach the runtime image.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PYTHONDONTWRITEBYTECODE=1
# binutils for `strip`: most of the size of the compiled extensions is their symbol tables.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, exactly as locked (versions and hashes), so editing the sources does not
# reinstall them. Then what the service never loads goes: the packages' own test suites, files
# for developers (type stubs, C and Cython sources and headers, JavaScript source maps), the
# extensions' symbol tables (not the vendored *.libs, which auditwheel has patched), and ONNX
# Runtime's C library for C/C++ callers (its Python binding carries its own copy and does not
# load it: the warm-up below and the smoke test run inference without it).
COPY requirements/${LOCK}.txt requirements/
RUN pip install --no-compile --require-hashes --no-deps -r requirements/${LOCK}.txt \
 && cd /opt/venv/lib/python3.11/site-packages \
 && find . -depth -type d -name tests -exec rm -rf {} + \
 && find . -type f \( -name '*.pyi' -o -name '*.pxd' -o -name '*.pyx' -o -name '*.h' \
        -o -name '*.c' -o -name '*.map' \) -delete \
 && find . -name '*.so' ! -path '*.libs/*' -exec strip --strip-unneeded {} + \
 && rm onnxruntime/capi/libonnxruntime.so.*

# The package itself (a wheel built from the sources), without re-resolving anything; never
# torch. The CLI registers every package's commands, so `arinext --help` proves none of them
# imports torch; a demo image must have Gradio. Then the server runs once on the default model
# (docker/warm-up.py), leaving bytecode for exactly the modules it imports. The wheel's copy of
# the default model becomes a link to the runtime stage's, so that the image holds it once; its
# fp32 version (the keyword trainer's backbone: training needs torch, never in this image) goes.
COPY pyproject.toml README.md ./
COPY arinext/ arinext/
COPY model/ model/
COPY training/ training/
COPY service/ service/
COPY docker/warm-up.py docker/
COPY artifacts/speech-commands-b0/ artifacts/speech-commands-b0/
COPY artifacts/speech-commands-b0-int8/ artifacts/speech-commands-b0-int8/
RUN pip install --no-compile --no-deps . \
 && pip check \
 && python -c "import importlib.util, sys; sys.exit('torch found in the serving venv' if importlib.util.find_spec('torch') else 0)" \
 && if [ "$ARINEXT_DEMO" = true ]; then python -c "import gradio"; fi \
 && arinext --help > /dev/null \
 && pip uninstall --yes --quiet pip setuptools \
 && model=$(python -I -c 'import arinext.service.settings as s; print(s.EMBEDDED_MODEL_DIR)') \
 && fp32=$(python -I -c 'import arinext.service.settings as s; print(s.EMBEDDED_FP32_MODEL_DIR)') \
 && rm -rf "$model" "$fp32" && ln -s /opt/arinext/models/speech-commands-b0 "$model" \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} + \
 && ARINEXT_DEMO=$ARINEXT_DEMO python docker/warm-up.py artifacts/speech-commands-b0-int8


FROM ${PYTHON_IMAGE} AS runtime
ARG ARINEXT_DEMO=false

# A fixed uid/gid, so volume permissions and runAsUser policies can name it.
RUN groupadd --gid 10001 arinext \
 && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init \
        --home-dir /tmp --shell /usr/sbin/nologin arinext

COPY --from=builder /opt/venv /opt/venv
# The default model (its int8 version, the one served), owned by root and read-only to the
# service user.
COPY artifacts/speech-commands-b0-int8/ /opt/arinext/models/speech-commands-b0/

# Everything that may write goes to /tmp (a tmpfs when the root filesystem is read-only). The
# server reads its address from ARINEXT_HOST/ARINEXT_PORT, as the healthcheck does, so
# `-e ARINEXT_PORT=9000` moves both.
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
    ARINEXT_MODELS=/opt/arinext/models/speech-commands-b0 \
    ARINEXT_DEFAULT_MODEL_DIR=/opt/arinext/models/speech-commands-b0 \
    ARINEXT_DEMO=${ARINEXT_DEMO} \
    ARINEXT_HOST=0.0.0.0 \
    ARINEXT_PORT=8000

WORKDIR /tmp
USER 10001:10001
EXPOSE 8000

# /healthz is liveness (the process answers; /readyz tells when models are warmed up); the start
# period covers interpreter start-up and the import of the serving stack.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ARINEXT_PORT', '8000') + '/healthz', timeout=4)"]

ENTRYPOINT ["arinext", "serve"]
CMD []
