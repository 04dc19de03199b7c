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
RUN pip install . \
    && useradd --create-home --uid 10001 reelbot \
    && mkdir -p /data \
    && chown reelbot:reelbot /data

USER 10001
VOLUME ["/data"]
# Docker stop sends SIGTERM: reelbot finishes in-flight polls and leaves open jobs resumable.
STOPSIGNAL SIGTERM
CMD ["reelbot", "run"]
