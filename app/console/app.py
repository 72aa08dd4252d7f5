"""`/console`: the operator console, server-rendered pages over the admin API.

Pages are Jinja templates; htmx (vendored, no build step) swaps fragments for the live overview and
the forms. Every action is a call to the service's own admin route (`AdminApi`). The pages send a
content-security policy that allows only this origin, so escaped output stays text and no injected
script could run even if it were not.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.api import operations
from app.console.access import (
    AdminScopeRequiredError,
    CsrfRefusedError,
    LoginRequiredError,
    Viewer,
    check_csrf,
    current_viewer,
)
from app.console.charts import line_chart
from app.console.history import Sample, ServiceHistory, counts_of, request_figures
from app.console.session import COOKIE_NAME, ConsoleSessions
from app.runtime import Runtime

if TYPE_CHECKING:  # jinja2 is loaded with the first page (see `Console.templates`)
    from fastapi.templating import Jinja2Templates

PREFIX = "/console"
_HERE = Path(__file__).parent
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(slots=True)
class Console:
    runtime: Runtime
    sessions: ConsoleSessions
    history: ServiceHistory
    _templates: Jinja2Templates | None = None

    @property
    def templates(self) -> Jinja2Templates:
        """The pages' templates, made on the first page: most workers never serve one, and jinja2
        is a tenth of an idle worker's memory."""
        if self._templates is None:
            self._templates = console_templates()
        return self._templates

    def viewer(self, request: Request) -> Viewer:
        return current_viewer(request, self.sessions, self.runtime.keys, self.runtime.settings.auth_enabled)

    def page(
        self, request: Request, template: str, viewer: Viewer | None, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        response = self.templates.TemplateResponse(
            request,
            template,
            {"viewer": viewer, "prefix": PREFIX, "now": datetime.now(UTC), **context},
            status_code=status_code,
            headers=SECURITY_HEADERS,
        )
        return response

    async def sample(self) -> Sample:
        """The service's figures now (every worker's, as `/metrics/publisher` reports them)."""
        return await self.sample_of(await operations.publisher_metrics(self.runtime, "service"))

    async def sample_of(self, metrics: dict[str, Any]) -> Sample:
        """A sample from a `/metrics/publisher` body already at hand, and the request figures now
        (read in a thread: with several workers they come from their files)."""
        figures = await asyncio.to_thread(request_figures, self.runtime.registry)
        return Sample(
            at=time.time(),
            counts={**counts_of(metrics), "accepted": figures.accepted},
            latency_buckets=figures.latency_buckets,
        )


def console_templates() -> Jinja2Templates:
    """The pages' templates (autoescaped: they are .html), with the console's filters."""
    from fastapi.templating import Jinja2Templates

    templates = Jinja2Templates(directory=_HERE / "templates")
    templates.env.filters["json"] = _json
    templates.env.filters["json_pretty"] = _pretty_json
    templates.env.filters["when"] = _when
    templates.env.globals["line_chart"] = line_chart
    return templates


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def install_console(app: FastAPI, runtime: Runtime) -> Console:
    """Add the console's pages, assets and error pages to `app`; the caller starts and stops its history."""
    settings = runtime.settings
    console = Console(
        runtime=runtime,
        sessions=ConsoleSessions(
            settings.console_session_secret.get_secret_value(), settings.console_session_ttl.total_seconds()
        ),
        history=ServiceHistory(lambda: console.sample()),
    )
    app.state.console = console
    app.mount(f"{PREFIX}/static", StaticFiles(directory=_HERE / "static"), name="console-static")

    from app.console import pages  # the routes need `Console` defined above

    app.include_router(pages.router, prefix=PREFIX, include_in_schema=False)

    @app.exception_handler(LoginRequiredError)
    async def login_required(request: Request, exc: LoginRequiredError) -> Response:
        target = f"{PREFIX}/login"
        if request.headers.get("hx-request"):  # an htmx fragment: have the whole page go to the login
            return Response(status_code=401, headers={"HX-Redirect": target})
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(COOKIE_NAME, path=PREFIX)
        return response

    @app.exception_handler(AdminScopeRequiredError)
    async def admin_scope_required(request: Request, exc: AdminScopeRequiredError) -> Response:
        return console.page(request, "forbidden.html", exc.viewer, status_code=403, title=exc.title)

    @app.exception_handler(CsrfRefusedError)
    async def csrf_refused(request: Request, exc: CsrfRefusedError) -> Response:
        return HTMLResponse(
            "Refused: this form did not come from this console session (CSRF check). Reload the page.",
            status_code=403,
            headers=SECURITY_HEADERS,
        )

    return console


async def changing(request: Request) -> Viewer:
    """The viewer of a state-changing request, after its CSRF check."""
    console = console_of(request)
    viewer = console.viewer(request)
    await check_csrf(request, viewer, console.sessions)
    return viewer


def _json(value: Any) -> str:
    """JSON as text for the page: autoescaping makes it safe HTML. (Jinja's `tojson` would also turn
    `<` and `>` into escapes meant for scripts, which operators would then read.)"""
    return json.dumps(value, ensure_ascii=False, default=str)


def _when(epoch_seconds: Any) -> str:
    """A Unix time as the pages show times (UTC, to the second)."""
    if not isinstance(epoch_seconds, int | float):
        return str(epoch_seconds or "")
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)
