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
ARG PYTORCH_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

FROM ${PYTORCH_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /opt/arinext/src

RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng \
 && rm -rf /var/lib/apt/lists/*

# Pin the base image's CUDA torch so that installing the extra can never replace it.
COPY pyproject.toml ./
RUN python -c "import torch; print(f'torch=={torch.__version__}')" > /opt/arinext/constraints.txt \
 && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(chr(10).join(p['dependencies'] + p['optional-dependencies']['train']))" > /tmp/requirements-train.txt \
 && pip install -c /opt/arinext/constraints.txt -r /tmp/requirements-train.txt

COPY arinext/ arinext/
COPY model/ model/
COPY training/ training/
COPY service/ service/
RUN pip install -c /opt/arinext/constraints.txt ".[train]" \
 && arinext --help > /dev/null

# Non-root by default; docker-compose.yml runs it as the host user so that runs/ stays theirs.
RUN groupadd --gid 10001 arinext \
 && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init \
        --home-dir /tmp --shell /usr/sbin/nologin arinext
USER 10001:10001
WORKDIR /workspace

ENTRYPOINT ["arinext"]
CMD ["--help"]
