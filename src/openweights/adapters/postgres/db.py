"""Postgres plumbing: connections with our codecs, named queries, forward-only migrations."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from openweights.errors import StackUnavailable

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def schema_dir() -> Path:
    """``schema/`` of a source checkout, or the copy shipped inside the wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[4] / "schema", here.parents[2] / "_schema"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("openweights schema/ directory not found; reinstall the package")


@cache
def query(name: str) -> str:
    """The SQL of ``schema/queries/<name>.sql``."""
    return (schema_dir() / "queries" / f"{name}.sql").read_text()


def check_schema_name(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"not a plain schema name: {name!r}")
    return name


_encode_json = msgspec.json.Encoder().encode


def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + _encode_json(value)  # binary jsonb: a version byte, then JSON text


def _decode_jsonb(data: bytes) -> Any:
    return msgspec.json.decode(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb,
                              schema="pg_catalog", format="binary")
    await conn.set_type_codec("json", encoder=lambda v: _encode_json(v).decode(),
                              decoder=msgspec.json.decode, schema="pg_catalog", format="text")


async def connect(url: str, schema: str = "public", **kwargs: Any) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, server_settings={
            "search_path": check_schema_name(schema)}, **kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StackUnavailable(f"cannot connect to Postgres: {exc}") from exc
    await _init_connection(conn)
    return conn


async def create_pool(url: str, schema: str = "public", **kwargs: Any) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            url, init=_init_connection,
            server_settings={"search_path": check_schema_name(schema)}, **kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StackUnavailable(f"cannot connect to Postgres: {exc}") from exc
    assert pool is not None
    return pool


def migrations() -> list[tuple[int, str, str]]:
    out = []
    for path in sorted((schema_dir() / "migrations").glob("*.sql")):
        version = int(path.name.split("_", 1)[0])
        out.append((version, path.name, path.read_text()))
    return out


async def migrate(conn: asyncpg.Connection, schema: str = "public") -> list[str]:
    """Apply the migrations not yet applied to ``schema``; returns their names.

    A transaction-scoped advisory lock makes concurrent starts wait for each other.
    """
    schema = check_schema_name(schema)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        await conn.execute(query("create_migrations_table"))
        done = {r["version"] for r in await conn.fetch(query("applied_migrations"))}
        for version, name, sql in migrations():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(query("record_migration"), version, name)
            applied_now.append(name)
    return applied_now
