"""The dashboard's ASGI app: routes, sign-in, and the page every error becomes.

Starlette (a small, well-kept ASGI toolkit: routing, forms, streaming responses) on
uvicorn; pages are rendered on the server with Jinja2 (autoescaped), made interactive
with htmx and a small script of our own; plots are uPlot. Both libraries are vendored
minified under ``static/`` (see ``static/LICENSES.txt``): nothing is fetched at run
time and no one needs npm to install it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from openweights.config import Settings
from openweights.errors import AuthenticationError
from openweights.services.dashboard import admin, files, jobs, live
from openweights.services.dashboard.sessions import COOKIE, Sessions
from openweights.services.dashboard.web import HERE, BadForm, Web, web

Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, with any error it raises turned into the page that says what
    happened (or the way back to sign-in)."""
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:
            return web(request).error(request, exc)

    run.__name__ = endpoint.__name__
    return run


async def signin_page(request: Request) -> Response:
    w = web(request)
    return w.page(request, "signin.html", why=request.query_params.get("why"),
                  next=_safe_next(request.query_params.get("next")))


def _safe_next(value: str | None) -> str:
    """Only a path of this site (never ``//other.example``): no open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/jobs"


async def signin(request: Request) -> Response:
    w = web(request)
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    token = form.get("token", "").strip()
    try:
        await w.sessions.client(token)
    except AuthenticationError as exc:
        return w.page(request, "signin.html", code=401, why=str(exc),
                      next=_safe_next(form.get("next")))
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


async def signout(request: Request) -> Response:
    w = web(request)
    try:
        await w.form(request)
    except BadForm as exc:
        return w.error(request, exc)
    if token := request.cookies.get(COOKIE):
        w.sessions.forget(token)
    response = RedirectResponse("/signin?why=Signed+out.", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def home(request: Request) -> Response:
    return RedirectResponse("/jobs", status_code=303)


async def not_found(request: Request, exc: Exception) -> Response:
    return web(request).page(request, "error.html", code=404, title="Not found",
                             message=f"There is no page {request.url.path!r} here.")


def routes() -> list[Any]:
    g = guarded
    return [
        Route("/", home),
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/jobs", g(jobs.job_list)),
        Route("/jobs/{job_id}", g(jobs.job_detail)),
        Route("/jobs/{job_id}/runs", g(jobs.job_runs), methods=["GET"]),
        Route("/jobs/{job_id}/{action:str}", g(jobs.job_action), methods=["POST"]),
        Route("/live/jobs", g(live.jobs_stream)),
        Route("/live/jobs/{job_id}/events", g(live.job_events_stream)),
        Route("/live/jobs/{job_id}/logs", g(live.job_logs_stream)),
        Route("/files/{file_id}", g(files.download)),
        Route("/files/{file_id}/view", g(files.view)),
        Route("/workers", g(admin.workers)),
        Route("/costs", g(admin.costs)),
        Route("/tokens", g(admin.tokens), methods=["GET"]),
        Route("/tokens", g(admin.create_token), methods=["POST"]),
        Route("/tokens/{token_id}/revoke", g(admin.revoke_token), methods=["POST"]),
        Route("/secrets", g(admin.secrets), methods=["GET"]),
        Route("/secrets", g(admin.set_secret), methods=["POST"]),
        Route("/secrets/{name}/remove", g(admin.remove_secret), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def create_app(settings: Settings) -> Starlette:
    """The app for token holders of the stack ``settings`` names (its client URL)."""
    sessions = Sessions(settings, settings.dashboard_sessions)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sessions.close()

    app = Starlette(routes=routes(), lifespan=lifespan,
                    exception_handlers={404: not_found})
    app.state.web = Web(sessions)
    return app
