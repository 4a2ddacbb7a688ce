"""`ow ls|show|logs|events|cancel|restart`: jobs from a shell.

Tables for people, `--json` for scripts. Exit codes: 0 ok, 1 an operation failed or an
id was not found, 2 bad usage or an unreachable stack (through `friendly`).
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import IO, Any

import typer
from rich.markup import escape
from rich.table import Table

from openweights.cli.common import (
    JSON_OPT,
    client,
    console,
    err_console,
    friendly,
    out,
    to_json,
    when,
)
from openweights.cli.tables import fit_table
from openweights.errors import (
    IllegalTransition,
    InvalidRequest,
    NotFound,
    OpenWeightsError,
    Unavailable,
)
from openweights.sdk.blocking import OpenWeights
from openweights.sdk.sync_models import Job, Run
from openweights.sdk.types import Event

CANCELABLE = frozenset({"pending", "in_progress"})
TAIL_LINES = 20  # of a failed job's log, in `ow show`


class Status(StrEnum):
    pending = "pending"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"


@friendly
def ls(status: Status | None = typer.Option(None, help="only jobs in this state"),
       limit: int = typer.Option(100, min=1, max=10_000, help="at most this many jobs"),
       ids: bool = typer.Option(False, "--ids", help="only ids, one per line"),
       as_json: bool = JSON_OPT) -> None:
    """List jobs, most recently updated first."""
    with client() as ow:
        jobs = ow.jobs.list(limit=limit, status=status.value if status else None)
    if as_json:
        out(to_json([j.model_dump() for j in jobs]))
    elif ids:
        for j in jobs:
            out(j.id)
    else:
        console.print(_jobs_table(jobs) if jobs else "no jobs")


@friendly
def show(job_id: str, as_json: bool = JSON_OPT) -> None:
    """A job's details, its runs and its outputs."""
    with client() as ow:
        job = ow.jobs.retrieve(job_id)
        runs = ow.runs.list(job_id=job_id)
        tail = job.log_tail(TAIL_LINES) if job.status == "failed" else None
    if as_json:
        failed = {} if tail is None else {"log_tail": tail}
        out(to_json({**job.model_dump(), "runs": [r.model_dump() for r in runs], **failed}))
    else:
        for part in [*_job_details(job, runs), *_failure(job, runs, tail)]:
            console.print(part, markup=False, highlight=False)


@friendly
def logs(job_id: str,
         run_id: str | None = typer.Option(None, "--run-id", help="default: latest run"),
         follow: bool = typer.Option(False, "--follow", "-f", help="stream until it ends")
         ) -> None:
    """Print a run's output: its stored log, or the lines so far (`--follow`: live)."""
    with client() as ow:
        run = _pick_run(ow, job_id, run_id)
        if run.log_file:
            for chunk in ow.files.chunks(run.log_file):
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            return
        source = (ow.runs.follow_logs(run.id) if follow
                  else (c.text for c in ow.runs.read_logs(run.id)))
        printed = False
        for text in source:
            sys.stdout.write(text)
            sys.stdout.flush()
            printed = True
        if not printed and not follow:
            raise NotFound(f"run {run.id} has no log (yet)")


@friendly
def events(job_id: str,
           follow: bool = typer.Option(False, "--follow", "-f", help="stream until it ends"),
           as_json: bool = JSON_OPT) -> None:
    """A job's run events (metrics, files): a table, or one JSON object per line."""
    with client() as ow:
        ow.jobs.retrieve(job_id)
        source = ow.events.subscribe(job_id) if follow else ow.events.list(job_id=job_id)
        if follow or as_json:
            for e in source:
                out(to_json(e, None) if as_json else _event_line(e))
            return
    table = Table()
    for col in ("seq", "time", "run", "data", "file"):
        table.add_column(col)
    for e in source:
        table.add_row(e["id"], when(e["created_at"]), e["run_id"], to_json(e["data"], None),
                      e["file"] or "")
    console.print(table)


@friendly
def cancel(job_ids: list[str] | None = typer.Argument(
               None, help="job ids; none: read them from stdin (`ow ls --json | ow cancel`)"),
           as_json: bool = JSON_OPT) -> None:
    """Cancel pending or running jobs; others are skipped. Exit 1 if any failed."""
    if not job_ids:
        if sys.stdin.isatty():
            raise typer.BadParameter("give job ids, or pipe them in", param_hint="JOB_IDS")
        job_ids = _ids_from_stdin(sys.stdin)
    with client() as ow:
        results = [_cancel_one(ow, j) for j in job_ids]
    for r in results:
        if as_json:
            out(to_json(r, None))
        else:
            why = r.get("error") or r["status"]
            style = {"canceled": "green", "skipped": "yellow"}.get(r["result"], "red")
            (err_console if r["result"] == "failed" else console).print(
                f"[{style}]{r['result']}[/{style}] {escape(r['id'])} ({escape(why)})",
                highlight=False)
    if any(r["result"] == "failed" for r in results):
        raise typer.Exit(1)


@friendly
def restart(job_id: str, as_json: bool = JSON_OPT) -> None:
    """Run an ended job again: back to pending, outputs cleared."""
    with client() as ow:
        job = ow.jobs.restart(job_id)
    if as_json:
        out(to_json(job.model_dump()))
    else:
        console.print(f"restarted {job.id} ({job.status})", highlight=False)


def _jobs_table(jobs: list[Job]) -> Table:
    # Ids are never cut (they go into the next command): at 80 columns the model, then
    # the type, then the time are left out first.
    rows = [[j.id, j.type, _status(j), j.model or "", j.worker_id or "", when(j.updated_at)]
            for j in jobs]
    return fit_table(console, ["id", "type", "status", "model", "worker", "updated"], rows,
                     ids=["id", "worker"], droppable=["model", "type", "updated"])


def _job_details(job: Job, runs: list[Run]) -> list[Any]:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for name in ("id", "type", "status", "model", "docker_image", "requires_vram_gb",
                 "allowed_hardware", "worker_id"):
        value = getattr(job, name)
        head.add_row(name, "" if value is None else str(value))
    if job.wait_reason:
        head.add_row("waiting", job.wait_reason)
    for name in ("created_at", "updated_at", "timeout"):
        head.add_row(name, when(getattr(job, name)))
    head.add_row("params", to_json(job.params, None))
    head.add_row("script", job.script)
    # Run, worker and log-file ids whole, as in `ow ls`: the times go first at 80 columns.
    rows = [[r.id, str(r.attempt), r.status, r.worker_id or "", when(r.started_at),
             when(r.updated_at), r.log_file or ""] for r in runs]
    table = fit_table(console, ["run", "attempt", "status", "worker", "started", "updated",
                                "log file"], rows, ids=["run", "worker", "log file"],
                      droppable=["updated", "started", "attempt"], title="runs")
    return [head, table, "outputs:", to_json(job.outputs)]


def _failure(job: Job, runs: list[Run], tail: str | None) -> list[str]:
    """Why a failed job failed and the end of its output, last: what to read first."""
    if job.status != "failed":
        return []
    parts = [f"error: {job.error or 'not recorded (an older api service)'}"]
    if runs and tail:
        parts += [f"end of its log (all of it: ow logs {job.id}):", tail.rstrip("\n")]
    elif runs:
        parts.append(f"{runs[-1].id} printed nothing")
    return parts


def _status(job: Job) -> str:
    """A job's state, and for a pending job that is not placed, why (the provisioner's)."""
    return f"{job.status}: {job.wait_reason}" if job.wait_reason else job.status


def _pick_run(ow: OpenWeights, job_id: str, run_id: str | None) -> Run:
    ow.jobs.retrieve(job_id)  # NotFound before "no runs"
    runs = ow.runs.list(job_id=job_id)
    if run_id is not None:
        for run in runs:
            if run.id == run_id:
                return run
        raise NotFound(f"job {job_id!r} has no run {run_id!r}")
    if not runs:
        raise NotFound(f"job {job_id!r} has not run yet")
    return runs[-1]


def _event_line(e: Event) -> str:
    file = f" file={e['file']}" if e.get("file") else ""
    return f"{when(e['created_at'])}  {e['run_id']}  {to_json(e['data'], None)}{file}"


def _ids_from_stdin(stream: IO[str]) -> list[str]:
    """Job ids piped in: `ow ls --json` (a JSON list) or whitespace-separated ids."""
    text = stream.read()
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise InvalidRequest(f"stdin is not a JSON list of jobs: {exc}") from None
        return [i["id"] if isinstance(i, dict) else str(i) for i in items]
    return text.split()


def _cancel_one(ow: OpenWeights, job_id: str) -> dict[str, Any]:
    try:
        job = ow.jobs.retrieve(job_id)
        if job.status not in CANCELABLE:
            return {"id": job_id, "result": "skipped", "status": job.status}
        return {"id": job_id, "result": "canceled", "status": ow.jobs.cancel(job_id).status}
    except IllegalTransition as exc:  # it ended meanwhile
        return {"id": job_id, "result": "skipped", "error": str(exc)}
    except Unavailable:
        raise
    except OpenWeightsError as exc:
        return {"id": job_id, "result": "failed", "error": str(exc)}


