"""Beat's outbox sweeps in the logs: DEBUG while they find nothing.

Beat sends ``identity.relay_outbox`` every ``relay_interval_s`` (5 s), and Celery writes an
INFO line for each send (beat), each receipt and each success (the worker): lines every few
seconds that say nothing happened. Those three lines are DEBUG for that task alone; the task
itself writes one INFO line when its sweep published rows (``workers.tasks``). Other tasks'
lines are untouched.
"""

from __future__ import annotations

import logging

from api.repositories.outbox import TASK_RELAY_OUTBOX

# Celery's loggers of the lines: beat's "Sending due task", the worker's "received" and
# "succeeded".
CELERY_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


def _is_sweep_line(record: logging.LogRecord) -> bool:
    data = getattr(record, "data", None)  # the worker's lines carry the task in ``data``
    if isinstance(data, dict):
        return data.get("name") == TASK_RELAY_OUTBOX
    args = record.args
    return isinstance(args, tuple) and TASK_RELAY_OUTBOX in args  # beat's line


class SweepLinesAtDebug(logging.Filter):
    """Turns Celery's INFO lines about a sweep task into DEBUG lines (dropped unless the
    logger is at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _is_sweep_line(record):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


def install() -> None:
    for name in CELERY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SweepLinesAtDebug) for f in logger.filters):
            logger.addFilter(SweepLinesAtDebug())
