"""``identity serve``: the one ASGI application (``api.main``) under an ASGI server.

Native gRPC needs HTTP/2 cleartext (h2c) and response trailers. The default,
``uvicorn-h2`` (uvicorn with its zttp parser and HTTP/2), serves REST, Connect, gRPC-Web and
gRPC on one port, and served REST as fast as uvicorn with httptools in bench/servers.sh
(bench/README.md; the choice is in docs/DECISIONS.md). ``--server uvicorn`` (httptools,
HTTP/1.1 only) is the fallback should zttp, pre-1.0, misbehave: ``--grpc-port`` then serves
native gRPC from the same application under Hypercorn in a child process. ``--server
hypercorn`` serves all on one port, at half the REST rate.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from api.settings import Settings

SERVERS = ("uvicorn-h2", "uvicorn", "hypercorn")
APP = "api.main:create_app"


# Cores per server process by default. A process hashes only for the requests of its own
# connections, so one client on one connection (an HTTP/2 SDK; a gateway with a few
# keep-alive connections) leaves the hash threads of the other processes idle. Few processes,
# each hashing on several cores, keep the machine's hash rate within reach of any client;
# four cores' worth of changes is well within one event loop (docs/DECISIONS.md,
# "Processes and hash threads").
CORES_PER_PROCESS = 4


def default_workers() -> int:
    """``identity serve``'s processes when ``--workers`` is 0: one per four cores, at least
    one (so one on this 2-core machine, hashing on both)."""
    return max(1, (os.cpu_count() or 1) // CORES_PER_PROCESS)


def serve(
    settings: Settings, *, host: str, port: int, workers: int, server: str, grpc_port: int
) -> None:
    workers = workers if workers > 0 else default_workers()
    if workers > 1 and settings.hash_workers == 0:
        # Each server process has its own hash pool: share the cores between them rather
        # than run processes times cores hashing threads that only contend.
        cores = os.cpu_count() or 1
        os.environ["IDENTITY_HASH_WORKERS"] = str(max(1, cores // workers))
    metrics_dir = _share_metrics(workers) if workers > 1 else None
    grpc: subprocess.Popen[bytes] | None = None
    if grpc_port and server == "uvicorn":
        grpc = subprocess.Popen(  # noqa: S603 (our own command line)
            [
                *(sys.executable, "-m", "api.cli", "serve", "--server", "hypercorn"),
                *("--host", host, "--port", str(grpc_port), "--grpc-port", "0"),
                *("--workers", str(workers)),
            ],
            preexec_fn=_die_with_parent,  # no threads yet in this process: fork-safe
        )
    try:
        if server == "hypercorn":
            _hypercorn(settings, host=host, port=port, workers=workers)
        else:
            _uvicorn(settings, host=host, port=port, workers=workers, h2=server == "uvicorn-h2")
    finally:
        if grpc is not None:
            grpc.terminate()
            try:
                grpc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                grpc.kill()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the gRPC child, before it runs: SIGTERM when this process ends, however it ends
    (uvicorn re-raises the signal that stopped it, so the ``finally`` above may never run,
    and a SIGKILL runs nothing). Linux only; elsewhere the ``finally`` is all there is."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def _share_metrics(workers: int) -> str | None:
    """Several server processes: their metrics go to one directory (prometheus_client's
    multiprocess mode, read by ``/metrics`` whichever process answers), so a scrape sees the
    sum of all. The directory is the operator's ``PROMETHEUS_MULTIPROC_DIR`` (emptied, as the
    client requires at each start) or a new temporary one, removed at exit (returned)."""
    given = os.environ.get(_METRICS_DIR)
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):
            os.remove(stale)
        return None
    os.environ[_METRICS_DIR] = tempfile.mkdtemp(prefix="identity-metrics-")
    return os.environ[_METRICS_DIR]


def _uvicorn(settings: Settings, *, host: str, port: int, workers: int, h2: bool) -> None:
    import uvicorn

    uvicorn.run(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through ours (api.logs): JSON in production
        loop="uvloop",
        http="zttp" if h2 else "httptools",
        http2=h2,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def _hypercorn(settings: Settings, *, host: str, port: int, workers: int) -> None:
    from hypercorn.config import Config
    from hypercorn.run import run

    config = Config()
    config.application_path = f"{APP}()"
    config.bind = [f"{host}:{port}"]
    # One worker runs in this process (0: no supervisor to outlive, SIGTERM stops it here).
    config.workers = 0 if workers == 1 else workers
    config.worker_class = "uvloop"
    config.accesslog = None
    config.loglevel = settings.log_level.upper()
    config.graceful_timeout = 10
    run(config)
