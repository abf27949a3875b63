# syntax=docker/dockerfile:1
# Rapport: one image for the web app (`rapport serve`) and one-off commands
# (`rapport migrate`, `rapport publish courses/<slug>`, `rapport create-user ...`).
#
#   docker build -t rapport .
#   docker run -p 8000:8000 -e RAPPORT_DATABASE_URL=... -e RAPPORT_SECRET_KEY=... rapport

# ---------------------------------------------------------------------------------------------
# Stage 1: browser libraries, pinned by package-lock.json, copied by the same `npm run vendor`
# that `make` uses.
FROM node:20-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts --loglevel=error && npm run --silent vendor

# ---------------------------------------------------------------------------------------------
# Stage 2: the runtime.
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

# The unprivileged user the app runs as; only /app/var (SQLite, local media) is writable.
RUN groupadd --system --gid 10001 rapport \
 && useradd --system --uid 10001 --gid rapport --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin rapport

WORKDIR /app

# Runtime dependencies only (requirements.lock has no dev tools and no hashes), in their own
# layer so that code changes do not reinstall them.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

# The source tree stays in /app: app/web.py and app/migrate.py find templates/, migrations/
# and alembic.ini next to the app package. The editable install only adds the `rapport`
# console script and the package metadata (pyproject.toml names README.md as its readme).
COPY pyproject.toml README.md alembic.ini ./
COPY app/ app/
COPY migrations/ migrations/
COPY templates/ templates/
COPY courses/ courses/
COPY --from=assets /src/app/static/vendor/ app/static/vendor/
RUN pip install --no-cache-dir --no-deps -e . \
 && mkdir -p /app/var/media \
 && chown -R rapport:rapport /app/var \
 && rapport --help >/dev/null

ENV RAPPORT_ENV=production \
    RAPPORT_DATA_DIR=/app/var \
    RAPPORT_MEDIA_DIR=/app/var/media

USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["python", "-m", "app", "serve", "--host", "0.0.0.0", "--port", "8000"]
