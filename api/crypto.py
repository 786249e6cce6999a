"""Symmetric encryption of secrets that must travel (a reset code in the outbox).

Fernet (AES-128-CBC + HMAC-SHA256) with a key derived from the server secret, so the code
is never in clear text in Postgres or the broker.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet


def _fernet(secret_key: str) -> Fernet:
    key = hashlib.sha256(b"identity-outbox-encryption:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(secret_key: str, plaintext: str) -> str:
    return _fernet(secret_key).encrypt(plaintext.encode()).decode()


def decrypt(secret_key: str, token: str) -> str:
    return _fernet(secret_key).decrypt(token.encode()).decode()
