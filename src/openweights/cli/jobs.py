"""`ow ls|show|logs|events|cancel|restart|fetch|files upload`: jobs and files from a shell.

Tables for people, `--json` for scripts. Exit codes: 0 ok, 1 an operation failed or an
id was not found, 2 bad usage or an unreachable stack (through `friendly`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import anyio
import nats
import typer
from pydantic_core import to_jsonable_python
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from openweights.errors import (
    IllegalTransition,
    InvalidRequest,
    NotFound,
    OpenWeightsError,
    StackUnavailable,
    Unavailable,
)
from openweights.sdk.client import OpenWeights
from openweights.sdk.logs import follow_logs, read_logs
from openweights.sdk.models import Job, Run
from openweights.stack import resolve

T = TypeVar("T")
# How long a command waits for an api service that does not answer (the SDK's default
# of 60 s suits programs riding out a restart, not a person at a prompt).
RETRY_S = 15.0
CANCELABLE = frozenset({"pending", "in_progress"})


class Status(StrEnum):
    pending = "pending"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"


async def _probe(url: str, token: str | None) -> None:
    """Fail fast: the SDK's connection keeps retrying an absent server, a shell should not."""
    seen: list[Exception] = []

    async def note(exc: Exception) -> None:
        seen.append(exc)

    try:
        # nats-py retries a refused server max_reconnect_attempts times even on first connect
        # (and forever when it is 0 or less): one retry, shortly after.
        with anyio.fail_after(10):
            nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1,
                                    reconnect_time_wait=0.1, connect_timeout=3, token=token,
                                    error_cb=note)
    except Exception as exc:  # nats-py raises unrelated types for "cannot connect"
        cause = seen[-1] if seen else exc
        if "authorization" in str(cause).lower():
            return  # reachable; the client's own connect says what is wrong with the token
        raise StackUnavailable(f"cannot reach openweights at {url} "
                               f"({type(cause).__name__}: {cause}); is `ow up` running?") from None
    await nc.close()


@contextmanager
def _client() -> Iterator[OpenWeights]:
    from openweights.cli.main import settings

    ow = OpenWeights(settings=resolve(settings()), retry_for_s=RETRY_S)
    try:
        t = ow.transport
        anyio.run(_probe, str(t.settings.nats_url), t.api_key)
        yield ow
    except StackUnavailable:
        raise
    except Unavailable as exc:  # NATS answers, the api service does not
        raise StackUnavailable(f"{exc}; is the api service running?") from None
    finally:
        ow.close()


async def _next(agen: AsyncIterator[T]) -> T:
    return await anext(agen)


def _each(ow: OpenWeights, agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an SDK async generator from this thread."""
    try:
        while True:
            try:
                yield ow.call(_next(agen))
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)  # async generators release what they hold
        with suppress(RuntimeError):  # still running after Ctrl-C: the client closes it
            if aclose is not None:
                ow.call(aclose())


def _json(value: Any, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable_python(value), indent=indent)


def _when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _progress(what: str) -> Progress:
    from openweights.cli.main import err_console

    return Progress(TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=err_console, transient=True,
                    disable=not err_console.is_terminal)


def _jobs_table(jobs: list[Job]) -> Table:
    table = Table()
    table.add_column("id", no_wrap=True)
    for col in ("type", "status", "model", "worker", "updated"):
        table.add_column(col)
    for j in jobs:
        table.add_row(j.id, j.type, j.status, j.model or "", j.worker_id or "",
                      _when(j.updated_at))
    return table


def _job_details(job: Job, runs: list[Run]) -> list[Any]:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for name in ("id", "type", "status", "model", "docker_image", "requires_vram_gb",
                 "allowed_hardware", "worker_id"):
        value = getattr(job, name)
        head.add_row(name, "" if value is None else str(value))
    for name in ("created_at", "updated_at", "timeout"):
        head.add_row(name, _when(getattr(job, name)))
    head.add_row("params", _json(job.params, None))
    head.add_row("script", job.script)
    table = Table(title="runs")
    for col in ("run", "attempt", "status", "worker", "started", "updated", "log file"):
        table.add_column(col)
    for r in runs:
        table.add_row(r.id, str(r.attempt), r.status, r.worker_id or "", _when(r.started_at),
                      _when(r.updated_at), r.log_file or "")
    return [head, table, "outputs:", _json(job.outputs)]


def _pick_run(ow: OpenWeights, job_id: str, run_id: str | None) -> Run:
    ow.jobs.retrieve(job_id)  # NotFound before "no runs"
    runs: list[Run] = ow.runs.list(job_id=job_id)
    if run_id is not None:
        for run in runs:
            if run.id == run_id:
                return run
        raise NotFound(f"job {job_id!r} has no run {run_id!r}")
    if not runs:
        raise NotFound(f"job {job_id!r} has not run yet")
    return runs[-1]


def _event_line(e: dict[str, Any]) -> str:
    file = f" file={e['file']}" if e.get("file") else ""
    return f"{_when(e['created_at'])}  {e['run_id']}  {_json(e['data'], None)}{file}"


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


def _copy(ow: OpenWeights, file_id: str, meta: dict[str, Any], sink: IO[bytes]) -> None:
    with _progress(meta["filename"]) as bar:
        task = bar.add_task("fetch", total=meta["bytes"])
        for chunk in _each(ow, ow.files._chunks(file_id)):
            sink.write(chunk)
            bar.advance(task, len(chunk))
    sink.flush()


class _Counting:
    """A binary file whose reads advance a progress bar (reads run in a worker thread)."""

    def __init__(self, f: IO[bytes], advance: Any) -> None:
        self.f, self.advance, self.name = f, advance, f.name

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.advance(len(data))
        return data


def register(app: typer.Typer) -> None:
    from openweights.cli.main import console, err_console, friendly

    as_json_opt = typer.Option(False, "--json", help="print JSON for scripts")

    def out(text: str) -> None:
        typer.echo(text)

    @app.command("ls")
    @friendly
    def ls(status: Status | None = typer.Option(None, help="only jobs in this state"),
           limit: int = typer.Option(100, min=1, max=10_000, help="at most this many jobs"),
           ids: bool = typer.Option(False, "--ids", help="only ids, one per line"),
           as_json: bool = as_json_opt) -> None:
        """List jobs, most recently updated first."""
        with _client() as ow:
            jobs: list[Job] = ow.jobs.list(limit=limit, status=status.value if status else None)
        if as_json:
            out(_json([j.model_dump() for j in jobs]))
        elif ids:
            for j in jobs:
                out(j.id)
        else:
            console.print(_jobs_table(jobs) if jobs else "no jobs")

    @app.command()
    @friendly
    def show(job_id: str, as_json: bool = as_json_opt) -> None:
        """A job's details, its runs and its outputs."""
        with _client() as ow:
            job: Job = ow.jobs.retrieve(job_id)
            runs: list[Run] = ow.runs.list(job_id=job_id)
        if as_json:
            out(_json({**job.model_dump(), "runs": [r.model_dump() for r in runs]}))
        else:
            for part in _job_details(job, runs):
                console.print(part, markup=False, highlight=False)

    @app.command()
    @friendly
    def logs(job_id: str,
             run_id: str | None = typer.Option(None, "--run-id", help="default: latest run"),
             follow: bool = typer.Option(False, "--follow", "-f", help="stream until it ends")
             ) -> None:
        """Print a run's output: its stored log, or the lines so far (`--follow`: live)."""
        with _client() as ow:
            run = _pick_run(ow, job_id, run_id)
            if run.log_file:
                for chunk in _each(ow, ow.files._chunks(run.log_file)):
                    sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                return
            source = (follow_logs(ow, run.id) if follow
                      else (text async for _, text in read_logs(ow, run.id)))
            printed = False
            for text in _each(ow, source):
                sys.stdout.write(text)
                sys.stdout.flush()
                printed = True
            if not printed and not follow:
                raise NotFound(f"run {run.id} has no log (yet)")

    @app.command()
    @friendly
    def events(job_id: str,
               follow: bool = typer.Option(False, "--follow", "-f", help="stream until it ends"),
               as_json: bool = as_json_opt) -> None:
        """A job's run events (metrics, files): a table, or one JSON object per line."""
        with _client() as ow:
            ow.jobs.retrieve(job_id)
            source = ow.events.subscribe(job_id) if follow else ow.events.list(job_id=job_id)
            if follow or as_json:
                for e in source:
                    out(_json(e, None) if as_json else _event_line(e))
                return
        table = Table()
        for col in ("seq", "time", "run", "data", "file"):
            table.add_column(col)
        for e in source:
            table.add_row(e["id"], _when(e["created_at"]), e["run_id"], _json(e["data"], None),
                          e["file"] or "")
        console.print(table)

    @app.command()
    @friendly
    def cancel(job_ids: list[str] | None = typer.Argument(
                   None, help="job ids; none: read them from stdin (`ow ls --json | ow cancel`)"),
               as_json: bool = as_json_opt) -> None:
        """Cancel pending or running jobs; others are skipped. Exit 1 if any failed."""
        if not job_ids:
            if sys.stdin.isatty():
                raise typer.BadParameter("give job ids, or pipe them in", param_hint="JOB_IDS")
            job_ids = _ids_from_stdin(sys.stdin)
        with _client() as ow:
            results = [_cancel_one(ow, j) for j in job_ids]
        for r in results:
            if as_json:
                out(_json(r, None))
            else:
                why = r.get("error") or r["status"]
                style = {"canceled": "green", "skipped": "yellow"}.get(r["result"], "red")
                (err_console if r["result"] == "failed" else console).print(
                    f"[{style}]{r['result']}[/{style}] {escape(r['id'])} ({escape(why)})",
                    highlight=False)
        if any(r["result"] == "failed" for r in results):
            raise typer.Exit(1)

    @app.command()
    @friendly
    def restart(job_id: str, as_json: bool = as_json_opt) -> None:
        """Run an ended job again: back to pending, outputs cleared."""
        with _client() as ow:
            job: Job = ow.jobs.restart(job_id)
        if as_json:
            out(_json(job.model_dump()))
        else:
            console.print(f"restarted {job.id} ({job.status})", highlight=False)

    @app.command()
    @friendly
    def fetch(file_id: str, output: Path | None = typer.Option(
            None, "--output", "-o", dir_okay=False, help="write here; default: stdout")) -> None:
        """Download a file: to `-o PATH`, else its raw bytes to stdout."""
        with _client() as ow:
            meta = ow.files.get_by_id(file_id)
            if output is None:
                _copy(ow, file_id, meta, sys.stdout.buffer)
                return
            part = output.with_name(output.name + ".part")
            try:
                with part.open("wb") as sink:
                    _copy(ow, file_id, meta, sink)
                part.replace(output)
            finally:
                part.unlink(missing_ok=True)

    files = typer.Typer(help="Upload and inspect files.", no_args_is_help=True)
    app.add_typer(files, name="files")

    @files.command("upload")
    @friendly
    def upload(path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
               purpose: str = typer.Option(..., help="conversations, preference, ..."),
               as_json: bool = as_json_opt) -> None:
        """Upload a file (datasets are validated first); print its id."""
        with _client() as ow, path.open("rb") as f, _progress(path.name) as bar:
            task = bar.add_task("upload", total=path.stat().st_size)
            counted = _Counting(f, lambda n: bar.advance(task, n))
            meta = ow.files.create(cast(IO[bytes], counted), purpose)
        out(_json(meta) if as_json else meta["id"])
