"""`ow audit job|worker <id>`: an aggregate's complete history, from the log itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import nats
from rich.table import Table

from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.adapters.nats.servers import connect_options
from openweights.cli.common import JSON_OPT, console, friendly, settings, when
from openweights.cli.tables import fit_table
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

    assert settings.nats_url is not None
    nc = await nats.connect(**connect_options(settings.nats_url), allow_reconnect=False,
                            connect_timeout=5)
    try:
        await read_stream(nc, nc.jetstream(), subjects.events_stream, on_batch,
                          filter_subjects=[subject])
    finally:
        await nc.close()
    if not out:
        raise NotFound(f"no {kind} {agg_id!r} in organization {org!r}")
    return out


VALUE_MAX = 400  # longer values are cut with a note saying so; --json has them whole


def _render(rows: list[dict[str, Any]], title: str) -> Table:
    per_seq: dict[int, int] = {}
    for r in rows:
        per_seq[r["seq"]] = per_seq.get(r["seq"], 0) + 1
    cells = [[_seq(r, per_seq[r["seq"]]), when(r["at"]), r["event"],
              f"{r['by']['kind']}:{r['by']['id']}".rstrip(":"), _changes(r["changes"])]
             for r in rows]
    return fit_table(console, ["seq", "time", "event", "by", "changed"], cells,
                     ids=["seq"], title=title)


def _seq(row: dict[str, Any], events_in_message: int) -> str:
    """The stream sequence; ``61/2`` for the second of several events appended at once."""
    return str(row["seq"]) if events_in_message == 1 else f"{row['seq']}/{row['index'] + 1}"


def _changes(changes: dict[str, Any]) -> str:
    parts = []
    for k, v in changes.items():
        if v in (None, [], {}):
            continue
        text = json.dumps(v)
        if len(text) > VALUE_MAX:
            text = f"{text[:VALUE_MAX]}… ({len(text)} chars, --json shows all)"
        parts.append(f"{k}={text}")
    return ", ".join(parts)


def _show(kind: str, agg_id: str, as_json: bool) -> None:
    s = operator_settings(settings())
    rows = anyio.run(history, s, s.default_org, kind, agg_id)
    if as_json:
        console.print_json(json.dumps(rows))
    else:
        console.print(_render(rows, f"{kind} {agg_id}"))


@friendly
def audit_job(job_id: str, as_json: bool = JSON_OPT) -> None:
    """Every event of a job and its runs: sequence, time, type, who, what changed."""
    _show("job", job_id, as_json)


@friendly
def audit_worker(worker_id: str, as_json: bool = JSON_OPT) -> None:
    """Every event of a worker: why it exists, what it did, why it stopped."""
    _show("worker", worker_id, as_json)
