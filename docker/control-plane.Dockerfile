# The control plane: api, projector, scheduler, provisioner and dashboard, one image
# (compose.yaml picks the service by its command). Build from the repository root:
#   docker build -f docker/control-plane.Dockerfile -t ghcr.io/openweights/control-plane:v0.1.0 .
# (the tag is openweights.images.CONTROL_PLANE).

FROM python:3.12.8-slim-bookworm AS wheel
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY pyproject.toml README.md ./
COPY schema ./schema
COPY src ./src
RUN python -m build --wheel --outdir /dist

FROM python:3.12.8-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OW_HOME=/var/lib/openweights \
    OW_LOG_JSON=true
COPY --from=wheel /dist /dist
# The wheel is the one just built; its dependencies are pinned by its own metadata.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "$(find /dist -name 'openweights-*.whl')[s3,runpod]" \
    && rm -rf /dist \
    && useradd --system --uid 10001 --user-group --create-home \
       --home-dir /var/lib/openweights openweights
# Never root: a compromised service cannot own the container.
USER 10001:10001
WORKDIR /var/lib/openweights
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "openweights.deploy", "health"]
CMD ["python", "-m", "openweights.services.api"]
