"""API keys: ``x-api-key`` for the task API, ``x-admin-key`` or a signed session cookie for ``/admin``.

Missing credentials give 401, wrong ones 403. A key that is not configured denies
everything it protects (403): an ops service reachable on a network must not fall open
because a variable was forgotten.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

__all__ = [
    "ADMIN_COOKIE",
    "SESSION_SECONDS",
    "admin_identity",
    "matches",
    "require_admin",
    "require_api_key",
    "session_cookie",
    "valid_session",
]

#: Name of the dashboard's session cookie.
ADMIN_COOKIE = "rj_admin"
#: Seconds a dashboard login lasts.
SESSION_SECONDS = 12 * 3600

_api_key = APIKeyHeader(name="x-api-key", auto_error=False, description="The service's API_KEY.")
_admin_key = APIKeyHeader(name="x-admin-key", auto_error=False, description="The service's ADMIN_API_KEY.")


def matches(given: str, expected: str) -> bool:
    """Constant-time comparison, so a key cannot be guessed byte by byte from response times."""
    return hmac.compare_digest(given.encode(), expected.encode())


def require_api_key(request: Request, key: str | None = Security(_api_key)) -> None:
    """Guard of the task API."""
    expected = request.app.state.ops.settings.api_key
    if not expected:
        raise HTTPException(403, "the task API is disabled: API_KEY is not set on the service")
    if not key:
        raise HTTPException(401, "missing x-api-key header")
    if not matches(key, expected):
        raise HTTPException(403, "wrong API key")


def _signature(admin_key: str, expires: int) -> str:
    # Keyed by the admin key itself: changing ADMIN_API_KEY ends every session.
    return hmac.new(admin_key.encode(), f"rosetta-jobs-admin:{expires}".encode(), hashlib.sha256).hexdigest()


def session_cookie(admin_key: str, *, now: float | None = None) -> str:
    expires = int((now or time.time()) + SESSION_SECONDS)
    return f"{expires}.{_signature(admin_key, expires)}"


def valid_session(cookie: str, admin_key: str) -> bool:
    expires_text, _, signature = cookie.partition(".")
    if not expires_text.isdigit() or int(expires_text) < time.time():
        return False
    return hmac.compare_digest(signature.encode(), _signature(admin_key, int(expires_text)).encode())


def admin_identity(request: Request, header_key: str | None) -> tuple[int, str] | None:
    """``None`` when the request may use the dashboard, else the status and reason to refuse it."""
    expected = request.app.state.ops.settings.admin_api_key
    if not expected:
        return 403, "the dashboard is disabled: ADMIN_API_KEY is not set on the service"
    if header_key:
        return None if matches(header_key, expected) else (403, "wrong admin key")
    cookie = request.cookies.get(ADMIN_COOKIE)
    if cookie and valid_session(cookie, expected):
        return None
    return 401, "log in, or send the x-admin-key header"


def require_admin(request: Request, key: str | None = Security(_admin_key)) -> None:
    """Guard of the dashboard's JSON API."""
    refusal = admin_identity(request, key)
    if refusal is not None:
        raise HTTPException(*refusal)
