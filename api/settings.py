"""One typed settings struct, read once from ``IDENTITY_*`` environment variables.

Every default points at a local service, so a fresh checkout runs with no configuration.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import msgspec

ENV_PREFIX = "IDENTITY_"
ENVIRONMENTS = ("development", "production")
MIN_SECRET_BYTES = 32
_DEV_SECRET = "dev-only-secret-change-me-0123456789abcdef"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = "postgresql://root@127.0.0.1:5432/identity"
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = "redis://127.0.0.1:6379/1"
    smtp_url: str = "smtp://127.0.0.1:8025"
    mail_from: str = "Identity <no-reply@identity.localhost>"
    # "production" (the default) or "development". In production every process refuses to
    # start without a secret key of its own (see ``require_secret_key``).
    env: str = "production"
    # Keys HMACs of tokens and reset codes and encrypts codes in the outbox.
    secret_key: str = _DEV_SECRET
    # The key before the last rotation: tokens, codes and queued e-mails made with it still
    # verify (and tokens are re-keyed on use) until it is removed.
    secret_key_previous: str = ""
    # Prefix of every Redis key, so several deployments (or test runs) share one Redis.
    redis_prefix: str = "idn:"
    # The address ``identity serve`` listens on when --host is not given (the Procfile's and
    # compose's ``web``): this host only by default; 0.0.0.0 to accept other hosts (compose
    # sets it inside its network).
    host: str = "127.0.0.1"
    # Public base URL of the login UI; the default reset link points there.
    public_url: str = "http://127.0.0.1:8080"
    # The link of a reset e-mail when the request names no urlTemplate ("" = from public_url).
    default_reset_url_template: str = ""
    # Origins (comma-separated) a user asking for its own reset link may name in
    # sendLink.urlTemplate ("" = the origin of public_url). Administrators may also name any
    # https origin.
    reset_link_origins: str = ""

    # argon2id, OWASP's recommended minimum.
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    # Threads that hash (0: one per core) and how many hashes may wait before a 503.
    hash_workers: int = 0
    hash_queue_limit: int = 64
    # ... and how long a hash may be expected to wait for a thread before a 503 (so admitted
    # requests stay fast under any overload, whatever the hash parameters).
    hash_max_wait_s: float = 1.0

    db_pool_min: int = 0
    db_pool_max: int = 10
    db_connect_timeout_s: float = 2.0
    db_command_timeout_s: float = 10.0
    redis_timeout_s: float = 1.0
    token_cache_ttl_s: int = 300
    # Sessions stop working this long after their last use (idle) and after their creation
    # (absolute), whatever their use; 0 disables each (docs/DECISIONS.md, "Session and token
    # lifetimes (issue 10)").
    session_idle_timeout_s: int = 24 * 3600
    session_max_age_s: int = 30 * 24 * 3600
    max_body_bytes: int = 64 * 1024
    # Origins (comma-separated, e.g. "https://app.example.com") whose browser code may call
    # the Connect and gRPC-Web services; none by default.
    cors_allowed_origins: str = ""

    # Instance policy defaults (each organization may override them).
    policy_min_length: int = 8
    policy_has_lowercase: bool = True
    policy_has_uppercase: bool = True
    policy_has_number: bool = True
    policy_has_symbol: bool = True
    policy_blocklist: bool = True
    policy_history: int = 0
    policy_max_password_attempts: int = 10
    policy_max_code_attempts: int = 5
    policy_code_expiry_seconds: int = 3600
    policy_notify_password_change: bool = True
    policy_reset_requests_per_hour: int = 5
    policy_lockout_duration_seconds: int = 0
    # How long a reset code stays claimed by the request that checked it (its write must
    # come within this, or a later request may claim the code; the write is fenced anyway).
    code_claim_ttl_ms: int = 30_000

    # Rate limits that are not per-organization policy.
    rate_failed_verifications_per_ip_per_minute: int = 100
    rate_verifications_per_user_per_minute: int = 60
    # The hosted "forgot password" page (``api.http.pages``): reset e-mails asked for by
    # login name, per client address (IPv6: per /64) and per login name, per hour.
    rate_reset_requests_per_ip_per_hour: int = 20
    rate_reset_requests_per_login_name_per_hour: int = 5
    # ... and the least time such a request takes, found or not, so that its answer time
    # does not tell whether the account exists.
    reset_request_min_duration_s: float = 0.3

    # Optional breached-password check (k-anonymity range API, HIBP-compatible).
    breach_check_url: str = ""
    breach_check_fail_closed: bool = False
    breach_check_timeout_s: float = 2.0

    # Outbox relay and Celery.
    relay_interval_s: float = 5.0
    # After a commit wakes the relay, how long it lets further commits join the batch (it
    # stops sooner once ``mail_batch_size`` rows wait to be published): a second of e-mail delay
    # for batches that cost the worker, relay, Postgres and mail server a third less per
    # e-mail at a high rate than 0.2 s did (docs/DECISIONS.md, "A delivery's cost").
    relay_gather_s: float = 1.0
    relay_min_age_s: float = 3.0
    # An outbox row published but not processed after this long is published again.
    relay_redeliver_after_s: float = 300.0
    broker_visibility_timeout_s: int = 900
    broker_timeout_s: float = 2.0
    task_max_retries: int = 10
    # Outbox ids per ``identity.deliver_emails`` task: one task sends them over one SMTP
    # connection, its rows locked in one transaction.
    mail_batch_size: int = 100
    # Attempts at delivering one e-mail the SMTP server refuses before its row is dead.
    mail_max_attempts: int = 5
    task_retry_backoff_max_s: int = 300
    smtp_timeout_s: float = 10.0
    # A CA bundle trusted for the SMTP server's certificate, besides the system's ("" = none).
    smtp_ca_file: str = ""
    # Test hook: seconds a mail task waits before sending (fault tests kill it there).
    mail_task_delay_s: float = 0.0

    log_level: str = "INFO"
    # "json" (one object a line), "text", or "auto": JSON in production, text in development.
    log_format: str = "auto"
    # How often each API process reads the outbox's state for /metrics.
    metrics_refresh_s: float = 15.0
    # The Prometheus endpoints of the Celery worker (its main process serves the sum of its
    # pool's processes) and of ``identity relay``: a port each, 0 (the default) for none, on
    # ``metrics_host`` (this host only by default; compose sets 0.0.0.0 inside its network).
    worker_metrics_port: int = 0
    relay_metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # The worker's prometheus_client multiprocess directory: "" = a new temporary one per
    # worker start, removed when it stops; a path = that one, emptied at start (this worker's
    # alone: never the PROMETHEUS_MULTIPROC_DIR of ``identity serve``).
    worker_metrics_dir: str = ""

    @property
    def hash_threads(self) -> int:
        return self.hash_workers or (os.cpu_count() or 1)

    @property
    def reset_url_template(self) -> str:
        return self.default_reset_url_template or (
            self.public_url.rstrip("/")
            + "/ui/password/reset?userID={{.UserID}}&code={{.Code}}&orgID={{.OrgID}}"
        )

    @property
    def trusted_reset_link_origins(self) -> tuple[str, ...]:
        listed = tuple(o.strip() for o in self.reset_link_origins.split(",") if o.strip())
        if listed:
            return listed
        parts = self.public_url.split("/")
        return ("/".join(parts[:3]),) if len(parts) >= 3 else ()

    @property
    def cors_origins(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.cors_allowed_origins.split(",") if o.strip())

    @property
    def uses_dev_secret(self) -> bool:
        return self.secret_key == _DEV_SECRET

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """The keys that verify: the current one first, then the previous one (if any)."""
        previous = self.secret_key_previous
        return (self.secret_key, previous) if previous else (self.secret_key,)

    def require_secret_key(self, process: str) -> None:
        """Refuse to run ``process`` in production with the public development key or a
        short one: with it, reset-code HMACs can be brute-forced offline and queued codes
        decrypted. Exits with a message naming the variable."""
        problems = []
        if self.env not in ENVIRONMENTS:
            problems.append(f"{ENV_PREFIX}ENV must be one of {', '.join(ENVIRONMENTS)}")
        elif self.env == "production":
            if self.uses_dev_secret:
                problems.append(
                    f"{ENV_PREFIX}SECRET_KEY is not set (the development default is public)"
                )
            elif len(self.secret_key.encode()) < MIN_SECRET_BYTES:
                problems.append(f"{ENV_PREFIX}SECRET_KEY is shorter than {MIN_SECRET_BYTES} bytes")
            previous = self.secret_key_previous
            if previous and (previous == _DEV_SECRET or len(previous.encode()) < MIN_SECRET_BYTES):
                problems.append(
                    f"{ENV_PREFIX}SECRET_KEY_PREVIOUS is shorter than {MIN_SECRET_BYTES} bytes"
                    " or the development default"
                )
        if problems:
            raise SystemExit(
                f"identity {process}: refusing to start in production: {'; '.join(problems)}."
                f" Set {ENV_PREFIX}SECRET_KEY to {MIN_SECRET_BYTES}+ random bytes (e.g."
                ' python -c "import secrets; print(secrets.token_urlsafe(48))"), or'
                f" {ENV_PREFIX}ENV=development on a development machine."
            )


def settings_from_env(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for field in Settings.__struct_fields__:
        value = env.get(ENV_PREFIX + field.upper())
        if value is not None:
            raw[field] = value
    raw.update(overrides)
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"invalid configuration: {exc}") from None


@functools.cache
def get_settings() -> Settings:
    return settings_from_env()
