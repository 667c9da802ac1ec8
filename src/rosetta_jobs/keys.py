"""Derivation of the credential key, kept apart so settings can check it without cryptography."""

from __future__ import annotations

import base64
import binascii

__all__ = ["derive_key"]


def derive_key(key: str) -> bytes:
    """Return the 32 AES key bytes the backend uses for ``CREDENTIAL_ENCRYPTION_KEY``.

    The backend takes the base64 decoding when it is 32 bytes long, else the raw
    UTF-8 bytes when those are 32 long; anything else is refused.
    """
    try:
        decoded = base64.b64decode(key)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == 32:
        return decoded
    raw = key.encode("utf-8")
    if len(raw) == 32:
        return raw
    raise ValueError(
        "CREDENTIAL_ENCRYPTION_KEY must be exactly 32 bytes (or base64-encoded 32 bytes). "
        f"Got {len(raw)} bytes. This key MUST match the backend's key exactly."
    )
