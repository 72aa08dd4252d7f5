"""Who is looking at the console, and what they may do: login cookie, scopes, CSRF."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from app.console.session import COOKIE_NAME, CSRF_FIELD, CSRF_HEADER, ConsoleSessions
from app.security.key_store import KeyRing
from app.security.keys import Scope


class LoginRequiredError(Exception):
    """No valid session: the console answers with the login page."""


class AdminScopeRequiredError(Exception):
    """A page or action for admin keys only, asked for with a metrics key."""

    def __init__(self, viewer: Viewer, title: str) -> None:
        super().__init__(title)
        self.viewer = viewer
        self.title = title


class CsrfRefusedError(Exception):
    """A state-changing request without this session's CSRF token, or from another origin."""


@dataclass(frozen=True, slots=True)
class Viewer:
    name: str
    key: str | None  # what the console's admin calls present; None with AUTH_ENABLED=false
    scopes: frozenset[str]
    cookie: str | None
    csrf_token: str
    auth_off: bool

    @property
    def is_admin(self) -> bool:
        """Admin keys see every page and may change things; metrics keys see the overview only."""
        return Scope.ADMIN in self.scopes


def current_viewer(request: Request, sessions: ConsoleSessions, ring: KeyRing, auth_enabled: bool) -> Viewer:
    """The viewer of this request; raises LoginRequiredError without a valid, unrevoked key that may use
    the console (admin, or metrics for the read-only overview)."""
    cookie = request.cookies.get(COOKIE_NAME)
    if not auth_enabled:
        scopes = frozenset(scope.value for scope in Scope)
        return Viewer("anonymous", None, scopes, None, sessions.csrf_token(None), auth_off=True)
    session = sessions.open(cookie)
    key = ring.lookup(session.key) if session is not None else None
    if session is None or key is None or key.revoked or not console_scopes(key.scopes):
        raise LoginRequiredError
    scopes = frozenset(str(scope) for scope in key.scopes)
    return Viewer(key.name, session.key, scopes, cookie, sessions.csrf_token(cookie), auth_off=False)


def console_scopes(scopes: frozenset[Scope] | set[Scope] | frozenset[str]) -> bool:
    """A key may log in with the admin scope, or the metrics scope (read-only overview)."""
    return Scope.ADMIN in scopes or Scope.METRICS in scopes


async def check_csrf(request: Request, viewer: Viewer, sessions: ConsoleSessions) -> None:
    """State-changing requests carry the session's token (form field or htmx header) and, when the
    browser says where they come from, come from this origin."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise CsrfRefusedError
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        form = await request.form()
        field = form.get(CSRF_FIELD)
        token = field if isinstance(field, str) else None
    if not sessions.csrf_valid(viewer.cookie, token):
        raise CsrfRefusedError
