"""The Celery worker's and the relay's own Prometheus series, and the endpoints that export them.

- **The worker** (``IDENTITY_WORKER_METRICS_PORT``, 0 = none): tasks by name and outcome and
  their durations (Celery's ``task_prerun``/``task_postrun``), the e-mails it delivered
  (``api.metrics``: sent, refused, dead, delay from commit to SMTP acceptance) and what the
  beat's sweeps it ran published (the ``identity_relay_`` rows and batches). Every process
  of the worker writes to its multiprocess directory (``workers.multiprocess``); the main
  process serves their sum from ``worker_init`` on, so a prefork pool's children add up,
  and a child that exits keeps its counts (``mark_process_dead`` drops only live gauges).
- **The relay** (``IDENTITY_RELAY_METRICS_PORT``, 0 = none): one process, its own registry:
  sweeps by result, rows and batches published, publish failures, and the process's CPU and
  memory.

Both listen on ``IDENTITY_METRICS_HOST`` (127.0.0.1) and serve their own series only: the
API's, imported along with the domain, are the API's to export.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from api.settings import Settings
from workers.multiprocess import ENV

log = logging.getLogger("identity.metrics")

TASKS = Counter(
    "identity_tasks_total",
    "Celery tasks run by the worker, by task name and outcome"
    " (success, retry, failure, ignored: out of retries, left to the relay)",
    ["task", "outcome"],
)
TASK_DURATION = Histogram(
    "identity_task_duration_seconds",
    "How long a Celery task ran in the worker, by task name",
    ["task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RELAY_ROWS = Counter(
    "identity_relay_rows_published", "Outbox rows published to the broker as tasks' arguments"
)
RELAY_BATCHES = Counter(
    "identity_relay_batches_published",
    "Tasks published to the broker, each a batch of up to 50 outbox rows",
)
RELAY_PUBLISH_FAILURES = Counter(
    "identity_relay_publish_failures",
    "Publishes the broker did not take (the sweep's rows stay due and are tried again)",
)
RELAY_SWEEPS = Counter(
    "identity_relay_sweeps",
    "Sweeps of the relay (identity relay) by result: published, idle (nothing due), failed",
    ["result"],
)

# The families each endpoint serves (prometheus_client names a counter's family without
# ``_total``).
WORKER_SERIES = ("identity_task", "identity_mail_", "identity_relay_")
RELAY_SERIES = ("identity_relay_", "process_", "python_")


class _Only(Collector):
    """A collector of ``source``'s families whose names start with ``prefixes``."""

    def __init__(self, source: Collector, prefixes: tuple[str, ...]) -> None:
        self.source, self.prefixes = source, prefixes

    def collect(self) -> Iterable[Metric]:
        return (m for m in self.source.collect() if m.name.startswith(self.prefixes))


_serving: list[str] = []  # the endpoint's address, for the worker's line once it logs


def _serve(settings: Settings, port: int, source: Collector, what: str) -> None:
    registry = CollectorRegistry()
    registry.register(_Only(source, WORKER_SERIES if what == "worker" else RELAY_SERIES))
    try:
        start_http_server(port, addr=settings.metrics_host, registry=registry)
    except OSError as exc:
        # A SystemExit passes through Celery's signal dispatch: the worker does not start.
        raise SystemExit(
            f"identity {what}: cannot serve metrics on {settings.metrics_host}:{port}"
            f" ({exc.strerror or type(exc).__name__})"
        ) from None
    _serving[:] = [f"http://{settings.metrics_host}:{port}/metrics"]
    log.info("%s metrics on %s", what, _serving[0])  # the worker's: not set up yet, see below


def serve_worker(settings: Settings) -> None:
    """In the worker's main process (``worker_init``): the sum of its processes' values."""
    directory = os.environ.get(ENV)
    if settings.worker_metrics_port and directory:
        collector = MultiProcessCollector(None, directory)  # type: ignore[no-untyped-call]
        _serve(settings, settings.worker_metrics_port, collector, "worker")


def announce_worker(**_: Any) -> None:
    """``worker_ready``: the worker's logging is set up now (at ``worker_init`` it is not)."""
    if _serving:
        log.info("worker metrics on %s", _serving[0])


def serve_relay(settings: Settings) -> None:
    """In ``identity relay``: its own registry (one process)."""
    if settings.relay_metrics_port:
        _serve(settings, settings.relay_metrics_port, REGISTRY, "relay")


@contextlib.contextmanager
def publishing() -> Iterator[None]:
    """Around a publish (``workers.celery_app.publish_outbox_rows``): count its failure."""
    try:
        yield
    except Exception:
        RELAY_PUBLISH_FAILURES.inc()
        raise


# --- Celery's task signals (connected by workers/__init__) -------------------------------

_started: dict[str, float] = {}


def task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id is not None:
        _started[task_id] = time.monotonic()


def task_ended(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    """One task run: its outcome (Celery's state: SUCCESS, RETRY, FAILURE, IGNORED…) and
    how long it took."""
    began = _started.pop(task_id, None) if task_id is not None else None
    name = str(getattr(task, "name", None) or "unknown")
    TASKS.labels(name, str(state or "unknown").lower()).inc()
    if began is not None:
        TASK_DURATION.labels(name).observe(time.monotonic() - began)


def child_exited(pid: int | None = None, **_: Any) -> None:
    """A pool process ends: its live gauges leave the sum (its counters stay)."""
    directory = os.environ.get(ENV)
    if directory:
        mark_process_dead(pid or os.getpid(), directory)  # type: ignore[no-untyped-call]
