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
