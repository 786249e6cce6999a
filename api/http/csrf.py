"""The hosted pages' defence against cross-site form posts (``api.http.pages``).

The pages have no session to bind a token to, so the form is bound to the browser: the GET
that shows a form sets a random nonce in a cookie (``HttpOnly``, ``SameSite=Strict``, path
``/ui/``, ``Secure`` behind https) and puts in the form a token that is an HMAC, under the
service's secret key, of that nonce, the form's purpose and the time it was issued. A POST
is accepted only with the cookie, a token made for that cookie and that form, not older than
``MAX_AGE_S``, and not marked ``Sec-Fetch-Site: cross-site`` by the browser. Another site can
neither read the token nor set or send the cookie (SameSite=Strict), so a forged post fails.
(The reset code in the form is what authorizes a password change; this check only keeps
other sites from submitting the forms in a user's browser.) See docs/DECISIONS.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Sequence

COOKIE = "identity_form"
# The cookie name behind https: the __Host- prefix makes browsers refuse it unless it is
# Secure, host-only and for path / (another host of the domain cannot plant one).
SECURE_COOKIE = "__Host-identity_form"
MAX_AGE_S = 2 * 3600
_NONCE = re.compile(r"^[A-Za-z0-9_-]{32}$")
_FUTURE_SLACK_S = 60


def cookie_name(secure: bool) -> str:
    return SECURE_COOKIE if secure else COOKIE


def new_nonce() -> str:
    return secrets.token_urlsafe(24)  # 32 characters


def valid_nonce(value: str | None) -> bool:
    return value is not None and bool(_NONCE.match(value))


def _mac(key: str, nonce: str, purpose: str, issued: int) -> str:
    message = f"form:{purpose}:{nonce}:{issued}".encode()
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token(secret_key: str, nonce: str, purpose: str, now: float | None = None) -> str:
    """The form's hidden token for the browser holding ``nonce``."""
    issued = int(now if now is not None else time.time())
    return f"{issued}.{_mac(secret_key, nonce, purpose, issued)}"


def check(
    secret_keys: Sequence[str],
    nonce: str | None,
    purpose: str,
    value: str | None,
    now: float | None = None,
) -> bool:
    """``value`` is a token of this form for the browser holding ``nonce``, still fresh
    (made with the current secret key or the previous one)."""
    if not valid_nonce(nonce) or not value or len(value) > 100:
        return False
    assert nonce is not None
    issued_text, _, mac = value.partition(".")
    if not issued_text.isdigit() or not mac:
        return False
    issued = int(issued_text)
    current = now if now is not None else time.time()
    if not (current - MAX_AGE_S <= issued <= current + _FUTURE_SLACK_S):
        return False
    return any(
        hmac.compare_digest(mac, _mac(key, nonce, purpose, issued)) for key in secret_keys if key
    )
