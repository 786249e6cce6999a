"""The Celery app: configuration chosen on purpose, and publishing outbox rows.

- JSON only; a task's only argument is an outbox id (no secret ever crosses the broker).
- ``acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged after it ran, so a
  worker killed mid-task leaves the message to be delivered again; tasks are idempotent.
- Redis broker: ``visibility_timeout`` (default 15 min) is how long an unacknowledged message
  of a dead worker waits before redelivery. It is above the longest retry countdown
  (``task_retry_backoff_max_s``, 5 min) so a scheduled retry is not redelivered early, and
  the outbox relay re-publishes anything unprocessed after ``relay_redeliver_after_s`` anyway.
  Workers sweep for such messages every ``visibility_timeout / 10`` seconds (1..60 s); kombu's
  default sweep is every 100 s, far too slow for a short timeout.
- Socket and connect timeouts, so a silent broker fails a publish in seconds, never hangs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from api.repositories.outbox import TASK_DELIVER_EMAILS, TASK_RELAY_OUTBOX, OutboxRow
from api.settings import Settings
from workers import metrics


def celery_config(settings: Settings) -> dict[str, Any]:
    timeout = settings.broker_timeout_s
    restore_every_s = max(1, min(60, settings.broker_visibility_timeout_s // 10))
    return {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "identity",
        "task_track_started": True,
        # No "task-sent" event per publish: it doubled the cost of publishing (a fanout
        # message each) and Flower sees tasks from the workers' own events.
        "task_send_sent_event": False,
        "worker_send_task_events": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": timeout,
        "broker_connection_max_retries": None,
        # A task still running when the broker connection drops finishes; its redelivery
        # then finds the outbox row processed and does nothing (Celery 6 will cancel it).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "unacked_restore_interval": restore_every_s,
            "unacked_restore_throttle": 1,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # Celery's default. Flower runs its inspect broadcasts at once from several threads;
        # with a pool of 4 they hung and Flower showed no workers and no tasks.
        "broker_pool_limit": 10,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": {
            "relay-outbox": {
                "task": TASK_RELAY_OUTBOX,
                "schedule": settings.relay_interval_s,
                # A relay not started in time is superseded by the next one.
                "options": {"expires": max(1.0, settings.relay_interval_s * 2)},
            }
        },
    }


def create_celery(settings: Settings) -> Celery:
    app = Celery("identity", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def publish_outbox_rows(app: Celery, rows: Sequence[OutboxRow], *, batch_size: int) -> None:
    """Publish the rows as few ``identity.deliver_emails`` tasks of up to ``batch_size`` ids
    (``mail_batch_size``), each carrying only outbox ids (never a secret). Blocks: call off
    the loop."""
    ids = sorted(row.id for row in rows)
    with metrics.publishing(), app.producer_or_acquire() as producer:
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            app.send_task(
                TASK_DELIVER_EMAILS,
                args=[batch],
                task_id=f"outbox-{batch[0]}-{batch[-1]}-{len(batch)}",
                producer=producer,
                retry=False,
            )
            metrics.RELAY_BATCHES.inc()
            metrics.RELAY_ROWS.inc(len(batch))
