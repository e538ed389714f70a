# callbot's container image: `docker build -t callbot .`, then see README.md, "Running in a container".

# Build stage: the source becomes a wheel, installed with its dependencies into a virtualenv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl

# Runtime stage: the virtualenv and the Slack manifest; no source tree, no build tools, no caches.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=3000 \
    CALLBOT_CONFIG=/app/callbot.toml \
    DATABASE_URL=sqlite:////data/callbot.db
# The bot runs as an unprivileged user; /data (a volume) is the only place it writes.
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
