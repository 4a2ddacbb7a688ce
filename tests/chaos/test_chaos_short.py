"""The short chaos soak: 100 jobs while agents, services, nats-server and Postgres are
killed; every check of the report must hold (bench/chaos.py runs the 1,000-job one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openweights.services.testing.chaos import ChaosPlan, run_chaos

pytestmark = pytest.mark.anyio


@pytest.mark.timeout(300)  # about 30 s: a soak, with kills, restarts and recoveries
async def test_short_chaos_soak_loses_nothing(outside_basetemp: Path) -> None:
    plan = ChaosPlan(jobs=100, agents=6, cancel_after_s=(0.5, 2.0), metrics_per_job=20,
                     service_kills=1)
    report = await run_chaos(outside_basetemp / "stack", plan)
    print(report.table())
    assert report.ok, report.table()
    for part in ("agent", "scheduler", "projector", "api", "nats", "postgres"):
        assert report.kills[part] >= 1, report.kills
