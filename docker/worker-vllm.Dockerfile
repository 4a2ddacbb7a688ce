# A worker machine for vLLM inference, served-model and weighted-SFT jobs: the agent is
# the entrypoint. Build from the repository root:
#   docker build -f docker/worker-vllm.Dockerfile -t ghcr.io/openweights/worker-vllm:v0.1.0 .
# (the tag is openweights.images.WORKER_VLLM; the RunPod backend starts it).

FROM python:3.12.8-slim-bookworm AS wheel
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY pyproject.toml README.md ./
COPY schema ./schema
COPY src ./src
RUN python -m build --wheel --outdir /dist

FROM pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime
ENV PYTHONUNBUFFERED=1 \
    OW_LOG_JSON=true
COPY --from=wheel /dist /dist
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "vllm==0.19.1" \
    "$(find /dist -name 'openweights-*.whl')[worker-vllm]" \
    && rm -rf /dist
EXPOSE 8000 10101 22
# Root on purpose: the agent gives every run a fresh unprivileged user (OW_JOB_ISOLATION).
ENTRYPOINT ["python", "-m", "openweights.services.agent"]
