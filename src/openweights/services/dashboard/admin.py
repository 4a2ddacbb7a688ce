"""Workers, costs, tokens and secrets pages.

Tokens and secrets need an admin token: the api service refuses a user token
(``Forbidden``), and the page says so. A new token's plain text is shown once, on the
page the create form answers with, and never again (the service keeps only its hash).
Secrets are listed by name only; values are set through a password field and never
shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from openweights.errors import InvalidRequest
from openweights.services.dashboard.web import web


def uptime(worker: dict[str, Any], now: datetime) -> str:
    """How long the machine has been up (until it stopped, for an ended one)."""
    start = datetime.fromisoformat(worker["created_at"])
    end = now if worker["status"] in ("starting", "active") else datetime.fromisoformat(
        worker["updated_at"])
    s = max(0, int((end - start).total_seconds()))
    return f"{s // 86400}d {s % 86400 // 3600}h" if s >= 86400 else \
        f"{s // 3600}h {s % 3600 // 60}m" if s >= 3600 else f"{s // 60}m {s % 60}s"


async def _costs(aow: Any) -> Any:
    """The organization's costs where the SDK has them (``aow.costs``), else None."""
    costs = getattr(aow, "costs", None)
    if costs is None:
        return None
    for name in ("summary", "get", "list"):
        if callable(fn := getattr(costs, name, None)):
            return await fn()
    return None


async def workers(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    ended = request.query_params.get("all") == "1"
    rows = await aow.workers.list(limit=1000, ended=ended)
    now = datetime.now(UTC)
    shown = [{**r, "uptime": uptime(dict(r), now)} for r in rows]
    return w.page(request, "workers.html", aow=aow, workers=shown, ended=ended)


async def costs(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    data = await _costs(aow)
    rows = await aow.workers.list(limit=1000, ended=True)
    return w.page(request, "costs.html", aow=aow, costs=data, workers=rows)


async def tokens(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    return w.page(request, "tokens.html", aow=aow, tokens=await aow.tokens.list(), new=None)


async def create_token(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    form = await w.form(request)
    days = (form.get("expires_days") or "").strip()
    if days and not days.isdigit():
        raise InvalidRequest(f"expiry {days!r} is not a whole number of days")
    new = await aow.tokens.create(form.get("name", "").strip(), role=form.get("role", "user"),
                                  expires_in_s=int(days) * 86400 if days else None)
    return w.page(request, "tokens.html", aow=aow, tokens=await aow.tokens.list(), new=new)


async def revoke_token(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    await w.form(request)
    await aow.tokens.revoke(request.path_params["token_id"])
    return RedirectResponse("/tokens", status_code=303)


async def secrets(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    names = await aow.secrets.list()
    return w.page(request, "secrets.html", aow=aow, names=sorted(names))


async def set_secret(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    form = await w.form(request)
    name = form.get("name", "").strip()
    if not name:
        raise InvalidRequest("a secret needs a name (like HF_TOKEN)")
    await aow.secrets.set(**{name: form.get("value", "")})
    return RedirectResponse("/secrets", status_code=303)


async def remove_secret(request: Request) -> Response:
    w = web(request)
    aow = await w.signed_in(request)
    await w.form(request)
    await aow.secrets.remove(request.path_params["name"])
    return RedirectResponse("/secrets", status_code=303)
