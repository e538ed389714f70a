# callbot's container image: `docker build -t callbot .`, then see README.md, "Running in a container".

# Reproducible: every Python package comes from requirements.lock / requirements-build.lock,
# pinned by version and sha256 (`make lock` writes them; pip refuses anything else). The base image
# is named by tag only: pin it by digest where the registry can be reached, in both FROM lines, as
# python:3.11-slim@sha256:<digest> (`docker buildx imagetools inspect python:3.11-slim` shows it).

# Build stage: the source becomes a wheel, installed with its locked dependencies into a virtualenv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
 && /opt/venv/bin/pip check

# Runtime stage: the virtualenv and the Slack manifest; no source tree, no build tools, no caches.
FROM python:3.11-slim
# Keep VERSION equal to pyproject.toml's version (tests/test_dockerfile.py checks it).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="callbot" \
      org.opencontainers.image.description="Slack bot that places outgoing phone calls through Evo Voice" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=3000 \
    CALLBOT_CONFIG=/app/callbot.toml \
    DATABASE_URL=sqlite:////data/callbot.db \
    AUDIT_SPOOL=/data/callbot.db.audit-spool
# AUDIT_SPOOL: where SQLite's default puts it, and on the volume for PostgreSQL too (/app is not
# writable). The bot runs as an unprivileged user; /data (a volume) is the only place it writes.
RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin callbot \
 && mkdir -p /app /data \
 && chown callbot:callbot /data
COPY --from=build /opt/venv /opt/venv
COPY manifest.yml /app/manifest.yml
WORKDIR /app
USER callbot
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bot.healthcheck"]
CMD ["python", "-m", "bot"]
