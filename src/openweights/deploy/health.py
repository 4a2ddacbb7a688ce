"""A container's healthcheck: can this service reach what it serves from?

Exits 0 when the event stream answers through NATS (the settings' credentials) and,
where the service has a database, Postgres answers ``SELECT 1``, each within
``OW_REQUEST_TIMEOUT_S``. compose.yaml runs it in every service container; a service
whose servers are gone waits for them itself (services/runtime.py), so an unhealthy
container says where the outage is rather than that the process died (compose's restart
policy handles that).
"""

from __future__ import annotations

import anyio
import asyncpg
import nats

from openweights.adapters.nats.servers import connect_options
from openweights.config import Settings
from openweights.subjects import Subjects


async def check(settings: Settings) -> list[str]:
    """What is unreachable, in words; empty when healthy."""
    problems: list[str] = []
    timeout = settings.request_timeout_s
    if settings.nats_url is None:
        problems.append("OW_NATS_URL is not set")
    else:
        try:
            with anyio.fail_after(timeout):
                nc = await nats.connect(**connect_options(settings.nats_url),
                                        allow_reconnect=False, connect_timeout=timeout)
                try:
                    await nc.jetstream().stream_info(
                        Subjects(settings.namespace).events_stream)
                finally:
                    await nc.close()
        except Exception as exc:  # nats-py raises unrelated types for one outage
            problems.append(f"NATS: {type(exc).__name__}: {exc}")
    if settings.database_url is not None:
        try:
            with anyio.fail_after(timeout):
                conn = await asyncpg.connect(settings.database_url)
                try:
                    await conn.fetchval("SELECT 1")
                finally:
                    await conn.close()
        except Exception as exc:  # asyncpg's and the OS's errors alike
            problems.append(f"Postgres: {type(exc).__name__}: {exc}")
    return problems
