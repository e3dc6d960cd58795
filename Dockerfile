# syntax=docker/dockerfile:1
# edgernn images. Two targets:
#   runtime  the torch-free streamer: numpy + onnxruntime + click, the shipped models, non-root
#            docker build --target runtime -t edgernn:runtime .
#   train    adds PyTorch (CPU) and the `train` extra: train and export inside the container
#            docker build --target train -t edgernn:train .
# Layers go from rarely to often changing: dependencies are installed from pyproject.toml alone,
# so editing the code rebuilds only the last small layers.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The dependency lists, read from pyproject.toml (tomllib is in the standard library from 3.11).
COPY pyproject.toml /tmp/edgernn/pyproject.toml
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/edgernn/pyproject.toml', 'rb'))['project']; \
open('/tmp/edgernn/core.txt', 'w').write('\n'.join(p['dependencies'])); \
open('/tmp/edgernn/train.txt', 'w').write('\n'.join(p['optional-dependencies']['train']))"

# The package as a wheel, built in a throwaway stage: no source tree in the images.
FROM base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgernn/ edgernn/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM base AS runtime
RUN pip install -r /tmp/edgernn/core.txt
COPY --from=wheel /wheels/ /wheels/
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin edgernn \
 && mkdir -p /work && chown edgernn /work
# Small example models; mount your own as the working directory: docker run -v "$PWD/runs:/work" ...
COPY models/*.onnx /opt/edgernn/models/
# The user edgernn, by number so that Kubernetes' runAsNonRoot can verify it.
USER 10001
WORKDIR /work
ENTRYPOINT ["edgernn"]
CMD ["--help"]

FROM base AS train
# PyTorch first, pinned, from its CPU index: the default one would pull a multi-GB CUDA build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
# A layer of its own on purpose: the torch layer stays cached when a dependency changes.
# hadolint ignore=DL3059
RUN pip install -r /tmp/edgernn/core.txt -r /tmp/edgernn/train.txt "torch==${TORCH_VERSION}"
COPY --from=wheel /wheels/ /wheels/
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin edgernn \
 && mkdir -p /work && chown edgernn /work
COPY models/*.onnx /opt/edgernn/models/
USER 10001
WORKDIR /work
ENTRYPOINT ["edgernn"]
CMD ["--help"]
