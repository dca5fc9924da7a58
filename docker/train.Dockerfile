# Training image: the CUDA PyTorch base plus the `train` extra; the entrypoint is `arinext`.
#
#   docker compose run --rm train train --preset finetune-speech-commands \
#       --data-root data/speech_commands --out runs/sc-b1
#   docker compose run --rm train export runs/sc-b1 --out artifacts/sc-b1
# Several GPUs: torchrun starts one `arinext` per GPU (DistributedDataParallel):
#   docker compose run --rm --entrypoint torchrun train \
#       --nproc-per-node 4 -m arinext train --preset ...
#
# Data, runs and artifacts are mounted at /workspace/{data,runs,artifacts} (see docker-compose.yml),
# so the relative paths used in the repository work unchanged. espeak-ng is there for
# `arinext synth-speech-commands` (the data of the built-in default model).
# Any image with torch on PATH's python: the CUDA PyTorch image, or a CPU base made locally
# (docker/torch-base.Dockerfile; `make image-train` builds both).
ARG PYTORCH_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

FROM ${PYTORCH_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /opt/arinext/src

RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The train extra exactly as locked (requirements/train.txt lists everything but torch), around
# the base image's torch, which nothing here may replace (--no-deps: nothing is resolved).
COPY requirements/train.txt requirements/
RUN python -c "import torch" \
 && pip install --require-hashes --no-deps -r requirements/train.txt

COPY pyproject.toml README.md ./
COPY arinext/ arinext/
COPY model/ model/
COPY training/ training/
COPY service/ service/
RUN pip install --no-deps . \
 && python -c "import torch, onnx, onnxruntime, soundfile, soxr, yaml, h5py, pandas, tqdm" \
 && arinext --help > /dev/null

# Non-root by default; docker-compose.yml runs it as the host user so that runs/ stays theirs.
RUN groupadd --gid 10001 arinext \
 && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init \
        --home-dir /tmp --shell /usr/sbin/nologin arinext
USER 10001:10001
WORKDIR /workspace

ENTRYPOINT ["arinext"]
CMD ["--help"]
