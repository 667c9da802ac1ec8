"""API keys: ``x-api-key`` for the task API, ``x-admin-key`` or a signed session cookie for ``/admin``.

Missing credentials give 401, wrong ones 403. A key that is not configured denies
everything it protects (403): an ops service reachable on a network must not fall open
because a variable was forgotten.

The session cookie is SameSite=Strict, but "site" means the host, not the port: a page served
on another port of the same host sends it along. So a state-changing dashboard request that
a cookie authenticates must also come from the dashboard's own origin (``same_origin``): the
browser's ``Sec-Fetch-Site``, else its ``Origin`` or ``Referer``; saying nothing is refused too.
A request with the ``x-admin-key`` header needs no such check: a page cannot set that header
on another origin without a CORS preflight this service never answers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

__all__ = [
    "ADMIN_COOKIE",
    "SESSION_SECONDS",
    "admin_identity",
    "matches",
    "require_admin",
    "require_api_key",
    "require_worker_key",
    "same_origin",
    "session_cookie",
    "valid_session",
]

#: Name of the dashboard's session cookie.
ADMIN_COOKIE = "rj_admin"
#: Seconds a dashboard login lasts.
SESSION_SECONDS = 12 * 3600

#: Methods that change nothing: no origin check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_EXPIRES = re.compile(r"[0-9]{1,12}")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}

_api_key = APIKeyHeader(name="x-api-key", auto_error=False, description="The service's API_KEY.")
_admin_key = APIKeyHeader(name="x-admin-key", auto_error=False, description="The service's ADMIN_API_KEY.")
_worker_key = APIKeyHeader(name="x-worker-key", auto_error=False, description="The service's WORKER_API_KEY.")


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


def require_worker_key(request: Request, key: str | None = Security(_worker_key)) -> None:
    """Guard of the DMZ workers' config endpoints: ``WORKER_API_KEY`` only (the task and admin keys are other headers,
    and the settings refuse a worker key equal to either)."""
    expected = request.app.state.ops.settings.worker_api_key
    if not expected:
        raise HTTPException(403, "the worker API is disabled: WORKER_API_KEY is not set on the service")
    if not key:
        raise HTTPException(401, "missing x-worker-key header")
    if not matches(key, expected):
        raise HTTPException(403, "wrong worker API key")


def _signature(admin_key: str, expires: int) -> str:
    # Keyed by the admin key itself: changing ADMIN_API_KEY ends every session.
    return hmac.new(admin_key.encode(), f"rosetta-jobs-admin:{expires}".encode(), hashlib.sha256).hexdigest()


def session_cookie(admin_key: str, *, now: float | None = None) -> str:
    expires = int((now or time.time()) + SESSION_SECONDS)
    return f"{expires}.{_signature(admin_key, expires)}"


def valid_session(cookie: str, admin_key: str) -> bool:
    """Whether ``cookie`` is a live session signed with ``admin_key``; anything malformed is simply not one."""
    expires_text, _, signature = cookie.partition(".")
    if not _EXPIRES.fullmatch(expires_text) or int(expires_text) < time.time():
        return False  # ASCII digits only: "²".isdigit() is true, and int() of 5,000 digits raises
    expected = _signature(admin_key, int(expires_text)).encode()
    return hmac.compare_digest(signature.encode("utf-8", "replace"), expected)


def same_origin(request: Request) -> bool | None:
    """Whether the browser says ``request`` comes from this service's own pages; ``None`` if it says nothing.

    ``Sec-Fetch-Site`` decides when present (only ``same-origin`` passes: ``same-site`` is another port);
    else ``Origin``, else ``Referer``, compared with the ``Host`` the request was sent to (scheme-less,
    default ports dropped, so a TLS proxy in front does not matter).
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site:
        return fetch_site == "same-origin"
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return None
    parts = urlsplit(source)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        return False  # "null" (a sandboxed frame, a file), or nonsense
    host = request.headers.get("host", "").lower().removesuffix(_DEFAULT_PORTS[parts.scheme])
    return bool(host) and parts.netloc.lower().removesuffix(_DEFAULT_PORTS[parts.scheme]) == host


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
    """Guard of the dashboard's JSON API: the key, or a session and (to change anything) the same origin."""
    refusal = admin_identity(request, key)
    if refusal is not None:
        raise HTTPException(*refusal)
    if not key and request.method not in SAFE_METHODS and same_origin(request) is not True:
        raise HTTPException(403, "cross-origin request refused: the dashboard's actions must come from its own pages")
