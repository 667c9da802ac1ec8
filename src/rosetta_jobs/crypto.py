"""AES-256-GCM credentials, byte-compatible with the Rosetta backend.

A token is ``base64(nonce[12] || ciphertext || tag[16])`` with no associated data,
and the key comes from ``CREDENTIAL_ENCRYPTION_KEY`` by the backend's own rule
(:func:`rosetta_jobs.keys.derive_key`). Decryption failures carry the same
``Decryption failed: <detail>`` text the Celery worker showed users.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import PreviewError
from .keys import derive_key

__all__ = ["Cipher"]

_NONCE_SIZE = 12


class Cipher:
    """Encrypt and decrypt credential tokens. Thread-safe: ``AESGCM`` holds no per-call state."""

    __slots__ = ("_aead",)

    def __init__(self, key: str) -> None:
        # A bad key raises derive_key's ValueError now, not on the first decrypt as the old worker did.
        self._aead = AESGCM(derive_key(key))

    def __repr__(self) -> str:
        return "Cipher(key=***)"

    def decrypt(self, token: str) -> str:
        """Return the plaintext of ``token``; an empty token stays empty, as on the backend."""
        if not token:
            return token
        try:
            # Non-validating base64, like the backend: characters outside the alphabet are dropped.
            raw = base64.b64decode(token)
            plaintext = self._aead.decrypt(raw[:_NONCE_SIZE], raw[_NONCE_SIZE:], None)
            return plaintext.decode("utf-8")
        except Exception as exc:
            # InvalidTag has an empty message, hence the spec's "Decryption failed: " on a wrong key.
            raise PreviewError(f"Decryption failed: {exc}") from None

    def encrypt(self, plaintext: str, *, nonce: bytes | None = None) -> str:
        """Return the token of ``plaintext`` (for seeding demo and test data); empty stays empty."""
        if not plaintext:
            return plaintext
        if nonce is None:
            nonce = os.urandom(_NONCE_SIZE)
        elif len(nonce) != _NONCE_SIZE:
            raise ValueError(f"nonce must be {_NONCE_SIZE} bytes, got {len(nonce)}")
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), None)
        return base64.standard_b64encode(nonce + sealed).decode("ascii")
