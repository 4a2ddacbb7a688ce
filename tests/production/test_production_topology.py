"""compose.yaml's topology on this machine (issue 19), short: 3 clustered nats-servers
from deploy/nats/nats.conf (auth callout, R3 streams), weed mini as S3, Postgres, 2 api,
2 projectors, 2 schedulers and the provisioner. Jobs run while the events stream's leader
node is killed and restarted and one api, projector and scheduler are killed (first
test), or while the leader node is SIGSTOPped (second). bench/production.py runs 300
jobs and a 30 s pause."""

from __future__ import annotations

from pathlib import Path

import pytest

from openweights.services.testing.production_chaos import ProductionPlan, run_production

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(
    not (Path(__file__).resolve().parents[2] / "compose.yaml").exists(),
    reason="needs the repository's compose.yaml")]


@pytest.mark.timeout(240)  # about 40 s on a quiet 2-core machine
async def test_jobs_survive_a_killed_nats_node_api_projector_and_scheduler(
        outside_basetemp: Path) -> None:
    plan = ProductionPlan(scenario="kill", jobs=40, agents=3, step_every_s=2.5)
    report = await run_production(outside_basetemp / "stack", plan)
    print(report.table())
    assert report.ok, report.table()
    for part in ("nats node", "api", "projector", "scheduler"):
        assert report.kills[part] == 1, report.kills


@pytest.mark.timeout(240)
async def test_jobs_survive_a_nats_node_cut_off_by_sigstop(outside_basetemp: Path) -> None:
    plan = ProductionPlan(scenario="pause", jobs=40, agents=3, step_every_s=2.5, pause_s=10)
    report = await run_production(outside_basetemp / "stack", plan)
    print(report.table())
    assert report.ok, report.table()
    assert report.kills["nats paused 10 s"] == 1, report.kills
