"""``jobs.history``: a job's own events, as `ow audit job` shows them, for its organization.

`ow audit` reads the log with operator credentials; a tenant (the dashboard's audit
timeline) reads here what its token may see: the events on its own organization's job
subject (what happened, who, and the fields each set, the why among them), never another
organization's, and never the run events (metrics), which `events.list` pages. A page;
``next`` reads on after the last message it holds.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec

from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.api import protocol
from openweights.domain.aggregates import JOB
from openweights.errors import NotFound
from openweights.events import decode
from openweights.services.api import paging
from openweights.services.api.context import Context, Deps, Page

VALUE_MAX = 2000  # characters of one changed value (a script, a long error); cut beyond


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > VALUE_MAX:
        return f"{value[:VALUE_MAX]}… ({len(value)} characters)"
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v) for v in value]
    return value


def entries(m: StoredMessage) -> list[bytes]:
    """The encoded entries of one stored message: one per event it holds."""
    return [protocol.encoder.encode({
        "seq": m.seq, "index": i, "at": e.at, "event": e.tag,
        "by": {"kind": e.by.kind, "id": e.by.id},
        "changes": _cut(msgspec.to_builtins(e.changes()))}) for i, e in enumerate(decode(m.data))]


async def job_history(d: Deps, ctx: Context, req: protocol.JobHistory) -> Page:
    if ctx.principal.role == "worker" or d.fold.get(ctx.org, JOB, req.job_id) is None:
        raise NotFound(f"job {req.job_id!r} not found")  # the same for another org's job
    out = paging.Filler(paging.budget(d), max(1, min(req.limit, 10_000)))
    last = req.after_seq

    async def on_batch(batch: list[StoredMessage]) -> None:
        nonlocal last
        for m in batch:
            encoded = entries(m)
            if out.count + len(encoded) > out.limit and out.count:
                scope.cancel()
                return
            for item in encoded:
                if not out.add(item):
                    scope.cancel()  # a page's worth: the next page starts at this message
                    return
            last = m.seq

    with anyio.CancelScope() as scope:
        await read_stream(d.nc, d.js, d.subjects.events_stream, on_batch,
                          filter_subjects=[d.subjects.job(ctx.org, req.job_id)],
                          start_seq=req.after_seq + 1)
    return Page(out.array(), {"after_seq": last} if scope.cancel_called else None)
