"""``jobs.history``: a job's own events (what, who, the fields set) for its organization
only; another organization's job reads as no job at all."""

from __future__ import annotations

import pytest

from openweights import OpenWeights
from openweights.errors import NotFound
from tests.tenancy.conftest import World


def _history(ow: OpenWeights, job_id: str, **fields: object) -> list[dict]:
    async def read() -> list[dict]:
        return [e async for page in ow.transport.pages("jobs.history", job_id=job_id,
                                                       **fields) for e in page]
    return ow.call(read())


def test_history_says_what_who_and_why_to_its_own_org_only(world: World) -> None:
    a, b = world.ow("a_admin"), world.ow("b_admin")
    job = a.jobs.submit(id_prefix="hist", script="echo a", docker_image="img")
    job.cancel()
    seen = _history(a, job.id)
    assert [e["event"] for e in seen] == ["job.submitted/2", "job.canceled/1"]
    assert seen[0]["by"] == {"kind": "client", "id": world.tid("a_admin")}
    assert seen[0]["changes"]["script"] == "echo a"
    assert seen[1]["changes"]["reason"] == "requested"
    assert _history(a, job.id, limit=1)[1]["event"] == "job.canceled/1"  # page by page
    with pytest.raises(NotFound):
        _history(b, job.id)  # B: as if there were no such job
    with pytest.raises(NotFound):
        _history(a, "hist-000000000000")
