# syntax=docker/dockerfile:1
# esmd image: `docker build -t esmd .`, then mount a config at /etc/esmd/esmd.yaml.
# The build stage installs the package (runtime dependencies only, no dev extra) into a venv;
# the runtime stage copies that venv onto the same slim base and runs it as a non-root user.
# tests/deploy/test_image_env.py repeats these install commands outside Docker.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
RUN python -m venv /opt/esmd \
    && /opt/esmd/bin/pip install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="esmd" \
      org.opencontainers.image.description="Event source mapping daemon: AWS Lambda event source mappings, self-hosted" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH="/opt/esmd/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ESMD_CONFIG=/etc/esmd/esmd.yaml \
    ESMD_HEALTH_URL=http://127.0.0.1:9464/healthz
RUN groupadd --system --gid 10001 esmd \
    && useradd --system --uid 10001 --gid esmd --home-dir /var/lib/esmd --no-create-home \
       --shell /usr/sbin/nologin esmd \
    && install -d -o esmd -g esmd -m 0750 /var/lib/esmd
COPY --from=build /opt/esmd /opt/esmd
# A placeholder that listens on 0.0.0.0:9464 and runs no mapping; mount yours over it.
COPY deploy/docker/esmd.yaml /etc/esmd/esmd.yaml
WORKDIR /var/lib/esmd
USER 10001:10001
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['ESMD_HEALTH_URL'], timeout=4)"]
CMD ["esmd", "run", "-c", "/etc/esmd/esmd.yaml"]
