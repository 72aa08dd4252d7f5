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

# The learning-analytics component (`docker build --target analytics`): its own dependency set,
# since Quix Streams caps confluent-kafka and pydantic below the service's versions.
FROM build AS analytics-build
COPY packages/analytics ./packages/analytics
RUN pip wheel --no-cache-dir --wheel-dir /analytics-wheels ./packages/event-models . ./packages/analytics

FROM python:3.11-slim AS analytics
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ANALYTICS_HOST=0.0.0.0 \
    ANALYTICS_PORT=8093 \
    ANALYTICS_STATE_DIR=/app/state
RUN useradd --system --uid 10001 --home-dir /app analytics
WORKDIR /app
COPY --from=analytics-build /analytics-wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
RUN mkdir -p /app/state && chown analytics /app/state
USER analytics
EXPOSE 8093
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"ANALYTICS_PORT\",\"8093\")}/health', timeout=2)" || exit 1
CMD ["event-ingest-analytics"]

# The service (the default target: the last stage).
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
