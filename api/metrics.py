"""Prometheus metrics of the domain, served with the HTTP ones at ``/metrics``.

With several server processes, ``identity serve`` puts them in prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): every process writes its values there and
``/metrics``, whichever process answers, reads the sum (``api.serve``).

The e-mail series at the end are counted where e-mails are delivered
(``api.domain.notifications.deliver_batch``, run by the Celery workers) and exported by the
worker's endpoint (``workers.metrics``); an API process delivers nothing, so its ``/metrics``
has no sample of them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
DEPENDENCY_UP = Gauge(
    "identity_dependency_up",
    "1 while the store answers, 0 while this process finds it out of reach (api.outages)",
    ["dependency"],
    multiprocess_mode="livemin",  # down in any live process: down
)
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

# E-mail delivery, counted by the worker process that delivered (``deliver_batch``); ``kind``
# is the notice (password_changed, password_reset), ``reason`` a refusal's kind (smtp-550,
# address-invalid, message-invalid): never an address or any text of the e-mail.
MAIL_SENT = Counter("identity_mail_sent_total", "E-mails the SMTP server accepted", ["kind"])
MAIL_FAILED = Counter(
    "identity_mail_failed_total",
    "E-mails refused (one failed attempt of their outbox row)",
    ["kind", "reason"],
)
MAIL_DEAD = Counter(
    "identity_mail_dead_total", "Outbox rows given up on by a delivery (now dead)", ["kind"]
)
MAIL_DELAY = Histogram(
    "identity_mail_delay_seconds",
    "From the outbox row's commit to the SMTP server's acceptance of its e-mail",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
