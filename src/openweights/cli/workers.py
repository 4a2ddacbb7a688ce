"""`ow workers`: the machines of your organization, what each runs and for how long."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from openweights.cli.common import JSON_OPT, client, console, friendly, out, to_json
from openweights.cli.tables import fit_table
from openweights.sdk.workers import WorkerInfo


@friendly
def workers(ended: bool = typer.Option(False, "--all", help="with shut-down ones"),
            limit: int = typer.Option(100, min=1, max=1000, help="at most this many"),
            as_json: bool = JSON_OPT) -> None:
    """List machines: id, hardware, status, current job, age."""
    with client() as ow:
        rows = ow.workers.list(limit=limit, ended=ended)
    if as_json:
        out(to_json(rows))
        return
    if not rows:
        console.print("no workers" + ("" if ended else " running (--all: with ended ones)"))
        return
    now = datetime.now(UTC)
    cells = [[w["id"], hardware(w), w["status"], w["current_job"] or "-",
              age(now, w["created_at"])] for w in rows]
    console.print(fit_table(console, ["id", "hardware", "status", "job", "age"], cells,
                            ids=["id", "job"], droppable=["hardware", "age"]))


def hardware(w: WorkerInfo) -> str:
    gpus = f"{w['gpu_count']}x {w['gpu_type']}" if w["gpu_count"] and w["gpu_type"] else ""
    vram = f"{w['vram_gb']} GB" if w["vram_gb"] else ""
    return " ".join(p for p in (w["hardware_type"] or "", gpus, vram) if p) or "-"


def age(now: datetime, since: datetime | str) -> str:
    start = datetime.fromisoformat(since) if isinstance(since, str) else since
    s = max(0, int((now - start).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
