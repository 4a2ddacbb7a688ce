"""`ow replay`: rebuild the read models from the log; `--verify` against the live ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import anyio
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from openweights.cli.common import console, err_console, friendly, settings
from openweights.replay import Difference, ReplayResult, rebuild, verify
from openweights.stack import operator_settings


def _digest_table(result: ReplayResult) -> Table:
    table = Table(title=f"rebuilt into schema {result.schema} up to seq {result.last_seq}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("digest (md5)")
    for name, (rows, digest) in result.digests.items():
        table.add_row(name, str(rows), digest)
    return table


@friendly
def replay(
    verify_: bool = typer.Option(
        False, "--verify", help="compare with the live read models; exit 1 on a difference"),
    to_seq: int | None = typer.Option(None, "--to-seq", help="stop after this sequence"),
    as_of: datetime | None = typer.Option(
        None, "--as-of", help="the state as of this time (ISO 8601)",
        formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    schema: str = typer.Option(
        "ow_replay", help="schema to rebuild into (replaced once the rebuild succeeded)"),
) -> None:
    """Rebuild every read model from sequence 1 into a fresh schema and digest it."""
    s = operator_settings(settings())
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.astimezone()
    with Progress(TextColumn("replaying"), BarColumn(), TextColumn("seq {task.completed:,.0f}"),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        progress = _reporter(bar)
        if verify_:
            result, diffs = anyio.run(lambda: verify(s, progress=progress))
        else:
            result = anyio.run(lambda: rebuild(s, schema, to_seq=to_seq, as_of=as_of,
                                               progress=progress))
            diffs = []
    console.print(_digest_table(result))
    console.print(f"{result.events:,} events in {result.messages:,} messages, "
                  f"{result.seconds:.2f} s, {result.events_per_s:,.0f} events/s")
    if verify_:
        _report(diffs)


def _reporter(bar: Progress) -> Callable[[int, int], None]:
    """A progress callback moving ``bar`` with the replay's position and rate."""
    task = bar.add_task("replay", total=1, rate="")
    started = [0.0]

    def progress(seq: int, target: int) -> None:
        now = time.perf_counter()
        if not started[0]:
            started[0] = now
        rate = seq / (now - started[0]) if now > started[0] else 0
        bar.update(task, completed=seq, total=target, rate=f"{rate:,.0f} msg/s")

    return progress


def _report(diffs: list[Difference]) -> None:
    if not diffs:
        console.print("[green]verify: live read models equal the replay[/green]")
        return
    for d in diffs:
        console.print(f"[red]{d.table}[/red] only in {d.side}: {d.row}")
    raise typer.Exit(1)
