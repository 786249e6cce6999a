"""The Celery worker's Prometheus multiprocess directory, chosen before any metric of the
worker exists (prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` when it is imported, and
Celery's command line imports it first: ``_choose_value_class``).

``workers/__init__`` imports this module first, which calls ``prepare``. In ``celery … worker``
with ``IDENTITY_WORKER_METRICS_PORT`` set, every process of the worker (the main one and its
pool's children, forked from it) writes its values to one directory, and the main process's
endpoint (``workers.metrics``) serves their sum. The directory is
``IDENTITY_WORKER_METRICS_DIR`` (emptied now, as prometheus_client requires at each start) or
a new temporary one, removed when the worker exits. Never the ``PROMETHEUS_MULTIPROC_DIR`` of
``identity serve``: a worker's directory is its own, so a worker that exports nothing drops
that variable too (its values would add to the API's).

Other processes that load the ``workers`` package (beat, Flower, ``celery inspect``, the
relay) are left alone: they must not write into, or empty, a running worker's directory.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from api.settings import Settings, get_settings

ENV = "PROMETHEUS_MULTIPROC_DIR"


# Celery's options before the command that take a value (``-A workers``).
_VALUED = frozenset(
    {"-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"}
)


def is_worker(argv: Sequence[str]) -> bool:
    """This process is ``celery [options] worker …`` (``python -m celery`` too); beat,
    ``inspect``, Flower, pytest and the relay are not."""
    if not argv or "celery" not in (Path(argv[0]).name, Path(argv[0]).parent.name):
        return False
    args = iter(argv[1:])
    for arg in args:
        if arg in _VALUED:
            next(args, None)
        elif not arg.startswith("-"):
            return arg == "worker"  # Celery's command
    return False


def prepare(settings: Settings, argv: Sequence[str] = sys.argv) -> str | None:
    """In a worker: set (or drop) ``PROMETHEUS_MULTIPROC_DIR`` for this process and its pool
    children; return the directory, or None when the worker exports nothing."""
    if not is_worker(argv):
        return None
    for early in ("api.metrics", "workers.metrics"):
        if early in sys.modules:  # their values exist already, in the wrong place
            raise SystemExit(f"identity worker: {early} was imported before workers.multiprocess")
    if not settings.worker_metrics_port:
        os.environ.pop(ENV, None)
        _choose_value_class()
        return None
    if settings.worker_metrics_dir:
        directory = settings.worker_metrics_dir
        os.makedirs(directory, exist_ok=True)
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.remove(stale)  # a previous run's values: counters start again from zero
    else:
        directory = tempfile.mkdtemp(prefix="identity-worker-metrics-")
        owner = os.getpid()

        def remove() -> None:
            if os.getpid() == owner:  # the main process, not a pool child
                shutil.rmtree(directory, ignore_errors=True)

        atexit.register(remove)
    os.environ[ENV] = directory
    _choose_value_class()
    return directory


def _choose_value_class() -> None:
    """Make prometheus_client follow ``PROMETHEUS_MULTIPROC_DIR`` as it is now. It reads the
    variable once, when imported, and Celery's command line imports it before the app (the
    Flower plugin it loads imports it); no metric has a value yet then (only the collectors
    of the process and the garbage collector exist, which keep none), so choosing its value
    class again now is as if the variable had been set before."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


# At import, so that it comes before prometheus_client's (workers/__init__ imports this first).
DIRECTORY = prepare(get_settings())
