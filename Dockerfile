# The one image of every app service in compose.yaml: api, migrate, worker, beat, flower.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml ./
COPY api ./api
COPY workers ./workers
COPY migrations ./migrations
RUN pip install . \
 && rm -rf /app/api /app/workers /app/migrations \
 && useradd --system --uid 10001 --home-dir /app identity \
 && mkdir -p var \
 && chown identity var

# The wheel carries the migrations to <prefix>/share/identity/migrations (pyproject's
# data-files), where `identity migrate` finds them.
USER identity
EXPOSE 8080 5555
CMD ["identity", "serve", "--host", "0.0.0.0", "--port", "8080"]
