"""`ow audit job|worker <id>`: an aggregate's complete history, from the log itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import nats
import typer
from rich.table import Table

from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.cli.common import console, friendly, settings
from openweights.config import Settings
from openweights.errors import NotFound
from openweights.events import decode
from openweights.stack import operator_settings
from openweights.subjects import Subjects


async def history(settings: Settings, org: str, kind: str, agg_id: str) -> list[dict[str, Any]]:
    subjects = Subjects(settings.namespace)
    subject = subjects.aggregate(org, kind, agg_id)
    out: list[dict[str, Any]] = []

    async def on_batch(batch: list[StoredMessage]) -> None:
        for m in batch:
            for i, event in enumerate(decode(m.data)):
                out.append({
                    "seq": m.seq, "index": i,
                    "stored_at": datetime.fromtimestamp(m.ts_ns / 1e9, UTC).isoformat(),
                    "at": event.at.isoformat(), "event": event.tag,
                    "by": {"kind": event.by.kind, "id": event.by.id},
                    "changes": msgspec.to_builtins(event.changes()),
                })

    nc = await nats.connect(settings.nats_url, allow_reconnect=False,  # type: ignore[arg-type]
                             connect_timeout=5)
    try:
        await read_stream(nc, nc.jetstream(), subjects.events_stream, on_batch,
                          filter_subjects=[subject])
    finally:
        await nc.close()
    if not out:
        raise NotFound(f"no {kind} {agg_id!r} in organization {org!r}")
    return out


def _render(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("seq", "time", "event", "by", "changed"):
        table.add_column(col)
    for r in rows:
        changes = ", ".join(f"{k}={json.dumps(v)[:60]}" for k, v in r["changes"].items()
                            if v not in (None, [], {}))
        table.add_row(f"{r['seq']}.{r['index']}", r["at"], r["event"],
                      f"{r['by']['kind']}:{r['by']['id']}".rstrip(":"), changes)
    return table


def _show(kind: str, agg_id: str, as_json: bool) -> None:
    s = operator_settings(settings())
    rows = anyio.run(history, s, s.default_org, kind, agg_id)
    if as_json:
        console.print_json(json.dumps(rows))
    else:
        console.print(_render(rows, f"{kind} {agg_id}"))


@friendly
def audit_job(job_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every event of a job and its runs: sequence, time, type, who, what changed."""
    _show("job", job_id, as_json)


@friendly
def audit_worker(worker_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every event of a worker: why it exists, what it did, why it stopped."""
    _show("worker", worker_id, as_json)
