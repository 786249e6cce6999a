"""Prometheus metrics of the domain, served with the HTTP ones at ``/metrics``.

Per process (each ``identity serve`` worker has its own registry).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PASSWORD_CHANGES = Counter(
    "identity_password_changes_total", "Committed password changes", ["verification"]
)
HASHES_IN_FLIGHT = Gauge(
    "identity_hashes_in_flight", "Password hashes and verifications running or waiting"
)
HASH_OVERLOAD_REJECTIONS = Counter(
    "identity_hash_overload_rejections_total",
    "Requests refused with 503 because the hash queue was full",
)
