# A worker machine for the fine-tuning jobs (Unsloth SFT/DPO/ORPO) and custom jobs: the
# agent is the entrypoint; it registers with the stack and runs jobs. Build from the
# repository root:
#   docker build -f docker/worker-unsloth.Dockerfile -t ghcr.io/openweights/worker-unsloth:v0.1.0 .
# (the tag is openweights.images.WORKER_UNSLOTH; the RunPod backend starts it).

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
RUN pip install --no-cache-dir "unsloth[cu128-torch2100]==2026.4.6" \
    "$(find /dist -name 'openweights-*.whl')[worker-unsloth]" \
    && rm -rf /dist
# 8000: a served model; 10101: the agent's file port; 22: ssh on RunPod.
EXPOSE 8000 10101 22
# Root on purpose: the agent gives every run a fresh unprivileged user (OW_JOB_ISOLATION).
ENTRYPOINT ["python", "-m", "openweights.services.agent"]
