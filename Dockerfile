# The one image of every app service in compose.yaml: api, migrate, worker, relay, beat, flower.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, each file checked against its hash in the lock: the runtime dependencies,
# the `ops` extra (Flower), the `otel` extra (tracing, off unless OTEL_TRACES_EXPORTER is set)
# and the build backend (setuptools, wheel). No honcho, no aiosmtpd:
# the development SMTP sink does not run from this image. Regenerate the lock with the command
# at its top whenever pyproject.toml's dependencies change (tests/test_deploy_files.py checks).
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml ./
COPY api ./api
COPY workers ./workers
COPY migrations ./migrations
COPY scripts/flower ./scripts/flower
RUN pip install --no-deps --no-build-isolation . \
 && pip check \
 && rm -rf /app/api /app/workers /app/migrations /app/build /app/*.egg-info \
 && useradd --system --uid 10001 --home-dir /app identity \
 && mkdir -p var \
 && chown identity var

# The wheel carries the migrations to <prefix>/share/identity/migrations (pyproject's
# data-files), where `identity migrate` finds them. Flower starts through scripts/flower
# (loopback unless FLOWER_BASIC_AUTH is set).
USER identity
EXPOSE 8080 5555
CMD ["identity", "serve", "--host", "0.0.0.0", "--port", "8080"]
