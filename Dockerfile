# reelbot production image: slim Python, non-root, the database on a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_URL=sqlite:////data/reelbot.db

WORKDIR /app
COPY pyproject.toml README.md ./
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
