"""Prometheus metrics of the domain, served with the HTTP ones at ``/metrics``.

With several server processes, ``identity serve`` puts them in prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): every process writes its values there and
``/metrics``, whichever process answers, reads the sum (``api.serve``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PASSWORD_CHANGES = Counter(
    "identity_password_changes_total", "Committed password changes", ["verification"]
)
HASHES_IN_FLIGHT = Gauge(
    "identity_hashes_in_flight",
    "Password hashes and verifications running or waiting",
    multiprocess_mode="livesum",  # the processes' sum, dead ones left out
)
HASH_OVERLOAD_REJECTIONS = Counter(
    "identity_hash_overload_rejections_total",
    "Requests refused with 503 because the hash queue was full",
)

# The outbox, read from Postgres every few seconds by each API process (``api.http.app``):
# the same value everywhere, so "max" across processes is that value.
OUTBOX_BACKLOG = Gauge(
    "identity_outbox_backlog", "Outbox rows not yet delivered (nor dead)", multiprocess_mode="max"
)
OUTBOX_OLDEST_UNSENT_SECONDS = Gauge(
    "identity_outbox_oldest_unsent_age_seconds",
    "Age of the oldest outbox row not yet delivered (0: none waiting)",
    multiprocess_mode="max",
)
OUTBOX_DEAD = Gauge(
    "identity_outbox_dead_rows",
    "Outbox rows given up on (undeliverable address, or out of attempts)",
    multiprocess_mode="max",
)
EMAILS_SENT = Gauge(
    "identity_emails_sent",
    "E-mails the workers have sent, from the event log (rate() it like a counter)",
    multiprocess_mode="max",
)
