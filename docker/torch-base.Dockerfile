# A CPU PyTorch base for docker/train.Dockerfile, for machines that reach no registry serving
# pytorch/pytorch images: the Debian base of docker/make-base with a venv holding the locked CPU
# build of torch (requirements/torch.txt). `make image-train` builds it, then the training image.
#
#   docker build -f docker/torch-base.Dockerfile -t arinext-torch-base .
#   docker build -f docker/train.Dockerfile --build-arg PYTORCH_IMAGE=arinext-torch-base .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE}
# A local directory holding the wheel (mounted into the build), or PyTorch's CPU index.
ARG TORCH_FIND_LINKS=
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch alone, checked against its locked hash; its own dependencies are pinned in
# requirements/train.txt, which the training image installs next.
COPY requirements/torch.txt /tmp/torch.txt
RUN if [ -n "$TORCH_FIND_LINKS" ]; then source="--find-links $TORCH_FIND_LINKS"; \
    else source="--extra-index-url $TORCH_INDEX_URL"; fi \
 && pip install --require-hashes --no-deps $source -r /tmp/torch.txt \
 && rm /tmp/torch.txt
