# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies, then run it as a non-root user.

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY app ./app
COPY proto ./proto
COPY alembic ./alembic
COPY packages/event-models ./packages/event-models
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./packages/event-models '.[postgres,otel]'

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8083 \
    DATA_DIR=/app/data
RUN useradd --system --uid 10001 --home-dir /app ingest
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
RUN mkdir -p /app/data /app/.run && chown ingest /app/data /app/.run
USER ingest
EXPOSE 8083
# A container must be pointed at a real cluster: KAFKA_BROKERS is required here (no dev broker).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8083\")}/healthz', timeout=2)" || exit 1
# Migrations (carried in the package) are their own step, before the server starts.
CMD ["sh", "-c", "event-ingest migrate && exec event-ingest serve"]
