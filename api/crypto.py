"""Symmetric encryption of secrets that must travel (a reset code in the outbox).

Fernet (AES-128-CBC + HMAC-SHA256) with a key derived from the server secret, so the code
is never in clear text in Postgres or the broker.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, MultiFernet


def _fernet(secret_key: str) -> Fernet:
    key = hashlib.sha256(b"identity-outbox-encryption:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(secret_key: str, plaintext: str) -> str:
    return _fernet(secret_key).encrypt(plaintext.encode()).decode()


def decrypt(secret_key: str | Sequence[str], token: str) -> str:
    """Decrypt with the key, or the first of several keys (current, previous) that fits."""
    keys = (secret_key,) if isinstance(secret_key, str) else tuple(secret_key)
    return MultiFernet([_fernet(key) for key in keys]).decrypt(token.encode()).decode()
