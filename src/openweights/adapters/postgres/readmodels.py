"""Reading and writing the read-model tables for a :class:`ReadModel` fold."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from openweights.adapters.postgres.db import query
from openweights.projection import rows
from openweights.projection.model import ReadModel
from openweights.projection.rows import COLUMNS, Row

_LOADERS = {
    "organizations": ("orgs", rows.org_state),
    "api_tokens": ("tokens", rows.token_state),
    "files": ("files", rows.file_state),
}


async def get_checkpoint(conn: asyncpg.Connection, name: str) -> int:
    value = await conn.fetchval(query("get_checkpoint"), name)
    return int(value or 0)


async def load(conn: asyncpg.Connection, model: ReadModel, keys: dict[str, set[Any]]) -> None:
    """Put the current rows behind ``keys`` into ``model`` (rows it lacks only)."""
    for table, (attr, to_state) in _LOADERS.items():
        store = getattr(model, attr)
        wanted = [k for k in keys[table] if k not in store]
        if wanted:
            for r in await conn.fetch(query(f"load_{table}"), wanted):
                store[r["id"]] = to_state(r)
    await _load_workers(conn, model, keys["workers"])
    await _load_jobs(conn, model, keys["jobs"])
    wanted_secrets = [k for k in keys["organization_secrets"] if k not in model.secrets]
    if wanted_secrets:
        orgs, names = zip(*wanted_secrets, strict=True)
        for r in await conn.fetch(query("load_organization_secrets"), list(orgs), list(names)):
            model.secrets[(r["organization_id"], r["name"])] = rows.secret_state(r)


async def _load_workers(conn: asyncpg.Connection, model: ReadModel,
                        keys: set[tuple[str, str]]) -> None:
    wanted = [k for k in keys if k not in model.workers]
    if wanted:
        orgs, ids = zip(*wanted, strict=True)
        for r in await conn.fetch(query("load_workers"), list(orgs), list(ids)):
            key = (r["organization_id"], r["id"])
            model.workers[key] = rows.worker_state(r)
            model.cached_models[key] = list(r["cached_models"])


async def _load_jobs(conn: asyncpg.Connection, model: ReadModel, ids: set[str]) -> None:
    wanted = [k for k in ids if k not in model.jobs]
    if not wanted:
        return
    runs: dict[str, list[Any]] = {}
    for r in await conn.fetch(query("load_runs_of_jobs"), wanted):
        runs.setdefault(r["job_id"], []).append(r)
    for r in await conn.fetch(query("load_jobs"), wanted):
        model.jobs[r["id"]] = rows.job_state(r, runs.get(r["id"], []))
        model.outputs[r["id"]] = dict(r["outputs"])


async def write_changes(conn: asyncpg.Connection, model: ReadModel, *, name: str,
                        last_seq: int) -> int:
    """Write what ``model`` changed and the checkpoint, in one transaction.

    Returns the number of rows written. The caller acks the log only after this returns.
    """
    upserts, deletes, new_events = model.take_changes()
    written = 0
    async with conn.transaction():
        # Order matters only for readability of a half-written batch, which no one sees.
        for table, table_rows in upserts.items():
            if table_rows:
                await conn.executemany(query(f"upsert_{table}"), table_rows)
                written += len(table_rows)
        for org_name in deletes.get("organization_secrets", []):
            await conn.execute(query("delete_organization_secrets"), *org_name)
        if new_events:
            await conn.copy_records_to_table("events", records=new_events,
                                             columns=COLUMNS["events"])
            written += len(new_events)
        await conn.execute(query("set_checkpoint"), name, last_seq, datetime.now(UTC))
    return written


async def bulk_load(conn: asyncpg.Connection, tables: dict[str, Iterable[Row]]) -> int:
    """COPY whole tables into empty ones (a replay into a fresh schema)."""
    n = 0
    for table, table_rows in tables.items():
        records = list(table_rows)
        if records:
            await conn.copy_records_to_table(table, records=records, columns=COLUMNS[table])
            n += len(records)
    return n
