"""``aow.events``: what jobs logged, stored and live.

Every method may raise ``StackUnavailable`` / ``Unavailable`` when the service cannot be
reached (after retrying), besides what it lists.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Any

from openweights.errors import InvalidRequest
from openweights.sdk.live import follow_job_events, list_events
from openweights.sdk.transport import Transport
from openweights.sdk.types import Event


class AsyncEvents:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def list(self, job_id: str | None = None, run_id: str | None = None) -> list[Event]:
        """Run events of a job (all its runs) or of one run, oldest first.

        Raises ``InvalidRequest`` when neither id is given."""
        if job_id is None and run_id is None:
            raise InvalidRequest("events.list needs job_id or run_id")
        return await list_events(self._t, job_id, run_id)

    async def latest(self, keys: str | builtins.list[str], job_id: str | None = None,
                     run_id: str | None = None) -> dict[str, Any]:
        """The newest value of each key (``"*"``: every key) over the events; a key never
        logged maps to None. Raises ``InvalidRequest`` when neither id is given."""
        wanted = None if keys == "*" else ([keys] if isinstance(keys, str) else list(keys))
        result: dict[str, Any] = {}
        async for page in self._t.pages("events.latest", read=True, job_id=job_id,
                                        run_id=run_id, keys=wanted):
            result.update(page)
        return result

    def subscribe(self, job_id: str, after_seq: int = 0) -> AsyncIterator[Event]:
        """Live events of a job, from ``after_seq`` on, without gaps; ends with the job.

        Raises ``NotFound`` (on the first item) for an unknown job."""
        return follow_job_events(self._t, job_id, after_seq)
