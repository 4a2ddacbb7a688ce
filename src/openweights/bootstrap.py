"""Making a stack ready: streams, schema, and the default organization.

Idempotent: run at every `ow up` (and by tests), it changes only what is missing.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import nats

from openweights import tokens
from openweights.adapters.nats.eventlog import JetStreamEventLog
from openweights.adapters.nats.servers import connect_options
from openweights.adapters.nats.streams import ensure_streams
from openweights.adapters.postgres.db import connect, migrate
from openweights.config import Settings
from openweights.domain.aggregates import ORG, TOKEN
from openweights.domain.commands import CreateOrganization, CreateToken
from openweights.errors import AuthenticationError, Conflict, StackUnavailable
from openweights.eventlog import EventLog
from openweights.events import Actor
from openweights.execute import Executor
from openweights.fold import LogFold
from openweights.subjects import Subjects, check_token


async def ensure_database(server_url: str, dbname: str) -> None:
    """Create ``dbname`` on the server behind ``server_url`` if it does not exist."""
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()


async def prepare(settings: Settings) -> list[str]:
    """Streams, migrations, default organization; returns the migrations applied now."""
    assert settings.nats_url and settings.database_url
    subjects = Subjects(settings.namespace)
    try:
        nc = await nats.connect(**connect_options(settings.nats_url), allow_reconnect=False,
                                connect_timeout=5)
    except Exception as exc:  # nats-py raises several unrelated types here
        raise StackUnavailable(f"cannot reach NATS at {settings.nats_url}: {exc}") from exc
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings, subjects)
        conn = await connect(settings.database_url)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        await ensure_organization(JetStreamEventLog(nc, js, subjects), subjects,
                                  settings.default_org, settings.default_org)
        return applied
    finally:
        await nc.close()


async def ensure_organization(log: EventLog, subjects: Subjects, org_id: str, name: str,
                              by: Actor = Actor("operator", "ow up")) -> bool:
    """Create the organization unless it exists (by any name); True if created now."""
    subject = subjects.aggregate(org_id, ORG.kind, org_id)
    fold = await LogFold(log, [subject]).load()
    if fold.get(org_id, ORG, org_id) is not None:
        return False
    cmd = CreateOrganization(org=org_id, name=name)
    return bool((await Executor(log, fold, subjects).execute(org_id, ORG, org_id, cmd, by)).events)


class OrganizationExists(Conflict):
    """`ow org create` of an organization that exists: nothing was created."""

    hint = ("pick another name, or add `--new-admin-token` to give it another admin "
            "token")


async def create_organization(settings: Settings, org_id: str, name: str,
                              token_name: str = "first admin token",
                              exist_ok: bool = True) -> dict[str, Any]:
    """An organization (if new) and a fresh admin token for it; the token is returned
    in plain text this once. Runs with service credentials (operators only).

    Raises :class:`OrganizationExists` (and creates nothing) when the organization
    exists and not ``exist_ok``."""
    subjects = Subjects(settings.namespace)
    check_token(org_id, "organization id")
    assert settings.nats_url is not None
    try:
        nc = await nats.connect(**connect_options(settings.nats_url), allow_reconnect=False,
                                connect_timeout=5)
    except Exception as exc:  # nats-py raises several unrelated types here
        if "authorization" in str(exc).lower():
            raise AuthenticationError(
                "creating an organization needs the services' NATS credentials "
                "(OW_NATS_URL=nats://svc:<password>@host:port); a token is not enough") from None
        raise StackUnavailable(f"cannot reach NATS: {exc}") from None
    try:
        log = JetStreamEventLog(nc, nc.jetstream(), subjects)
        by = Actor("operator", "ow org create")
        created = await ensure_organization(log, subjects, org_id, name, by)
        if not created and not exist_ok:
            raise OrganizationExists(f"organization {org_id!r} already exists; "
                                     "nothing was created")
        plain = tokens.new_token()
        cmd = CreateToken(org=org_id, token_id=tokens.token_id(plain), name=token_name,
                          role="admin", token_hash=tokens.token_hash(plain),
                          token_prefix=tokens.token_prefix(plain))
        fold = LogFold(log, [subjects.aggregate(org_id, TOKEN.kind, cmd.token_id)])
        await Executor(log, fold, subjects).execute(org_id, TOKEN, cmd.token_id, cmd, by)
        return {"org": org_id, "token": plain, "token_id": cmd.token_id,
                "created": created}
    finally:
        await nc.close()


async def ensure_local_admin_token(settings: Settings) -> str:
    """The default organization's local admin token, created on the first `ow up` and
    kept in ``$OW_HOME/admin.token`` (0600) so that the quickstart needs no setup."""
    path = settings.home / "admin.token"
    if path.exists():
        return str(path)
    created = await create_organization(settings, settings.default_org, settings.default_org,
                                        token_name="local admin (ow up)")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(created["token"])
    tmp.chmod(0o600)
    tmp.replace(path)
    return str(path)
