"""`ow cost`: what your organization's work cost, and `ow cost limit set|clear`: its
lifetime spending limits (admins)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer

from openweights.cli.common import JSON_OPT, client, console, friendly, out, to_json
from openweights.cli.tables import fit_table
from openweights.cli.tenancy import parse_duration
from openweights.errors import InvalidRequest
from openweights.sdk.costs import CostReport

BY = ("job", "worker", "token", "org")


def parse_since(text: str, now: datetime) -> datetime:
    """``7d``, ``12h`` (that long ago) or an ISO time (UTC unless it says otherwise)."""
    try:
        return now - timedelta(seconds=parse_duration(text))
    except InvalidRequest:
        pass
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(f"--since {text!r}: use a duration (7d, 12h) or an ISO time "
                             "(2026-03-01 or 2026-03-01T09:00:00Z)") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


@friendly
def cost(ctx: typer.Context,
         by: str = typer.Option("job", "--by", help="job, worker, token or org"),
         since: str = typer.Option(None, "--since", help="e.g. 7d, 12h, or 2026-03-01"),
         limit: int = typer.Option(100, min=1, max=1000, help="at most this many rows"),
         as_json: bool = JSON_OPT) -> None:
    """What work cost: a machine's price per hour times its lifetime; a job, its runs'
    shares of their machines' time. `--by worker|org` counts idle machine time too."""
    if ctx.invoked_subcommand is not None:
        return
    if by not in BY:
        raise typer.BadParameter(f"{by!r}: use one of {', '.join(BY)}", param_hint="--by")
    start = parse_since(since, datetime.now(UTC)) if since else None
    with client() as ow:
        report = ow.costs.report(by, since=start, limit=limit)  # type: ignore[arg-type]
    if as_json:
        out(to_json(report))
        return
    print_report(report)


def print_report(report: CostReport) -> None:
    by = report["by"]
    cells = [[r["key"], usd(r["usd"])] for r in report["rows"]]
    since = f" since {report['since']}" if report["since"] else ""
    if cells:
        console.print(fit_table(console, [by, "cost"], cells, ids=[by],
                                title=f"cost by {by}{since}"))
    else:
        console.print(f"nothing cost anything{since}")
    more = " (more rows: --limit)" if report["truncated"] else ""
    console.print(f"total {usd(report['total_usd'])}{more}")
    limits = [f"organization {usd(report['org_limit_usd'])}"] if report["org_limit_usd"] \
        is not None else []
    if report["token_limit_usd"] is not None:
        limits.append(f"this token {usd(report['token_limit_usd'])}")
    if limits:
        console.print("spending limits: " + ", ".join(limits))


@friendly
def limit_set(amount: float = typer.Argument(..., help="USD, lifetime"),
              token: str = typer.Option(None, "--token", help="a token id (default: the "
                                        "whole organization)"),
              as_json: bool = JSON_OPT) -> None:
    """Set a lifetime spending limit: once reached, submissions are refused and running
    work is canceled (admins only)."""
    _set(amount, token, as_json)


@friendly
def limit_clear(token: str = typer.Option(None, "--token", help="a token id (default: the "
                                          "whole organization)"),
                as_json: bool = JSON_OPT) -> None:
    """Remove a spending limit (admins only)."""
    _set(None, token, as_json)


def _set(amount: float | None, token: str | None, as_json: bool) -> None:
    with client() as ow:
        result = ow.costs.set_limit(amount, token_id=token)
    if as_json:
        out(to_json(result))
        return
    who = f"token {token}" if token else f"organization {result['organization']}"
    console.print(f"spending limit of {who}: " +
                  ("none" if amount is None else usd(amount)))
