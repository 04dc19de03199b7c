# reelbot production image: slim Python, non-root, the database on a volume.
FROM python:3.11-slim

# REELBOT_IN_CONTAINER makes the default database /data/reelbot.db (the volume) and makes
# reelbot refuse a SQLite file anywhere else: it would live in the container's layer and
# vanish with it (e.g. a relative DATABASE_URL from an --env-file). Defaults live in the
# Settings class, not here.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REELBOT_IN_CONTAINER=1

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY cogs ./cogs
# The postgres extra (asyncpg) too: the same image runs alone on SQLite or as one of several
# workers on PostgreSQL (compose.yaml).
RUN pip install "./[postgres]" \
    && useradd --create-home --uid 10001 reelbot \
    && mkdir -p /data \
    && chown reelbot:reelbot /data

USER 10001
VOLUME ["/data"]
# /healthz, /readyz, /metrics and the webhook's /callback (HTTP_LISTEN).
EXPOSE 8080
# Liveness only (/healthz): a database or Discord outage makes /readyz fail, and restarting
# the container would not fix either. No curl in the slim image: Python's urllib does it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('HTTP_LISTEN', ':8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
# Docker stop sends SIGTERM: reelbot finishes in-flight polls and leaves open jobs resumable.
STOPSIGNAL SIGTERM
CMD ["reelbot", "run"]
