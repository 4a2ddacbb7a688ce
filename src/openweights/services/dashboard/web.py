"""What every page shares: the signed-in client, templates, CSRF checks, error pages.

Errors become pages that say what happened (the package's own error messages, which
name the problem), never a stack trace: a refused token goes back to sign-in with the
reason; an unknown or another organization's job is "not found" (the api service
answers both the same, so the page cannot tell a tenant that the other exists).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from openweights.errors import (
    AuthenticationError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    OpenWeightsError,
    Unavailable,
)
from openweights.sdk.client import AsyncOpenWeights
from openweights.services.dashboard.sessions import COOKIE, Sessions

log = structlog.get_logger("dashboard")
T = TypeVar("T")
HERE = Path(__file__).parent
TERMINAL = ("completed", "failed", "canceled")


REFUSED = ("Your token was refused: it is unknown to this stack, or it was revoked or has "
           "expired. Sign in with a working token (`ow token create` makes one).")


class SignedOut(Exception):
    """No usable token: the request goes to sign-in, saying ``why``."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class BadForm(Exception):
    """A post without this session's form token (CSRF) or with a foreign Origin."""


def _when(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(when=_when, compact=_compact, urlq=lambda s: quote(str(s), safe=""))
    return env


class Web:
    """The dashboard's shared parts, held by the app (``request.app.state.web``)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.env = environment()

    def page(self, request: Request, template: str, code: int = 200,
             **ctx: Any) -> HTMLResponse:
        token = request.cookies.get(COOKIE)
        aow = ctx.pop("aow", None)
        base = {"request": request, "csrf": self.sessions.csrf(token) if token else "",
                "org": aow.organization_id if aow else None,
                "org_name": aow.org_name if aow else None,
                "role": aow.transport.role if aow else None}
        html = self.env.get_template(template).render(**base, **ctx)
        return HTMLResponse(html, status_code=code)

    async def signed_in(self, request: Request) -> AsyncOpenWeights:
        """The client of the request's token. Raises :class:`SignedOut`."""
        token = request.cookies.get(COOKIE)
        if not token:
            raise SignedOut("Sign in with an openweights API token.")
        try:
            return await self.sessions.client(token)
        except AuthenticationError:
            self.sessions.forget(token)
            raise SignedOut(REFUSED) from None

    async def form(self, request: Request) -> dict[str, str]:
        """A posted form of this session. Raises :class:`BadForm`."""
        origin = request.headers.get("origin")
        if origin is not None and origin.rstrip("/") != f"{request.url.scheme}://" \
                f"{request.url.netloc}":
            raise BadForm(f"a form posted from another site ({origin}) was refused")
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        token = request.cookies.get(COOKIE, "")
        if not token or not self.sessions.csrf_ok(token, form.get("csrf")):
            raise BadForm("this form is not from this session's page (or the dashboard "
                          "restarted since it was shown): reload the page and try again")
        return form

    def error(self, request: Request, exc: Exception) -> Response:
        """The page for ``exc``: what happened, in words."""
        if isinstance(exc, SignedOut):
            return signin_redirect(request, exc.why)
        if isinstance(exc, AuthenticationError):  # refused mid-session: revoked or expired
            if token := request.cookies.get(COOKIE):
                self.sessions.forget(token)
            return signin_redirect(request, REFUSED)
        status, title = _STATUS.get(type(exc), (500, "Something went wrong"))
        for cls, (code, name) in _STATUS.items():
            if isinstance(exc, cls) and status == 500:
                status, title = code, name
        message = str(exc) if isinstance(exc, OpenWeightsError | BadForm) else (
            "The dashboard could not show this page; its log says why.")
        if status == 500:
            log.error("dashboard.error", path=request.url.path, error=repr(exc))
        return self.page(request, "error.html", code=status, title=title, message=message)


_STATUS: dict[type[Exception], tuple[int, str]] = {
    NotFound: (404, "Not found"),
    InvalidRequest: (400, "Not a valid request"),
    BadForm: (400, "Form refused"),
    Forbidden: (403, "Not allowed"),
    Conflict: (409, "Not possible now"),
    Unavailable: (503, "openweights is unavailable"),
}


def signin_redirect(request: Request, why: str) -> Response:
    url = f"/signin?why={quote(why)}&next={quote(request.url.path)}"
    if request.headers.get("hx-request"):  # htmx follows this header, not a 303
        response: Response = Response(status_code=200, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@asynccontextmanager
async def closing(items: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """``items``, closed on leaving (an SDK stream unsubscribes at once, not when
    collected)."""
    try:
        yield items
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


def web(request: Request) -> Web:
    w: Web = request.app.state.web
    return w
