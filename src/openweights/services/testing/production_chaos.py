"""The production topology's soak (issue 19): jobs while its parts fail.

``kill``: the events stream's leader node is SIGKILLed (and started again on its data
after a moment), then one api, one projector and one scheduler (compose's restart
brings each back). ``pause``: the leader node is SIGSTOPped for ``pause_s`` (cut off:
its peers and clients hear nothing, its TCP connections stay open) and then continued.
The checks are the chaos soak's (services/testing/chaos.py): no acknowledged event
lost, no job with two completed runs, every job in its expected state, ``ow replay
--verify`` equal.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
from nats.js.api import StreamInfo

from openweights.adapters.nats.servers import connect_options
from openweights.config import Settings
from openweights.sdk.client import AsyncOpenWeights
from openweights.services.testing.chaos import ChaosPlan, ChaosReport, soak_under
from openweights.services.testing.production import ClusterStack
from openweights.subjects import Subjects


@dataclass
class ProductionPlan:
    scenario: str = "kill"  # or "pause"
    jobs: int = 300
    agents: int = 6
    step_every_s: float = 4.0  # between two outages
    nats_down_s: float = 2.0  # a killed node is started again after this
    pause_s: float = 30.0
    seed: int = 1


async def run_production(home: Path, plan: ProductionPlan) -> ChaosReport:
    """Start the topology, run the soak under the plan's outages, check, stop."""
    stack = ClusterStack(
        home, max_workers=plan.agents, heartbeat_s=1.0, worker_lost_s=8.0,
        worker_lost_starting_s=60.0, run_start_timeout_s=20.0, scheduler_check_s=1.0,
        provisioner_check_s=0.5, cancel_grace_s=2.0, idle_shutdown_s=3600.0)
    report = ChaosReport()
    await anyio.to_thread.run_sync(stack.start)
    stack.supervise()
    started = time.monotonic()
    soak = ChaosPlan(jobs=plan.jobs, agents=plan.agents, cancel_after_s=(0.5, 2.0),
                     metrics_per_job=20, seed=plan.seed, deadline_s=900.0)
    aow = AsyncOpenWeights(api_key=stack.token, settings=stack.client_settings(),
                           retry_for_s=300)
    ops = AsyncOpenWeights(settings=stack.settings, retry_for_s=60)

    async def outages(_stack: ClusterStack, _plan: ChaosPlan, rng: random.Random,
                      rep: ChaosReport, scope: anyio.CancelScope, done: anyio.Event) -> None:
        with scope:
            await _outages(stack, plan, rng, rep)
            done.set()
            await anyio.sleep_forever()

    try:
        await soak_under(stack, soak, report, aow=aow, ops=ops, outages=outages)
        events, replicas = await _events(stack.settings)
        report.check("events stream replicas", 3, replicas)
        report.rows.append(("events in the log", "", str(events), True))
    finally:
        report.seconds = time.monotonic() - started
        await ops.close()
        await anyio.to_thread.run_sync(stack.stop)
    return report


async def _outages(stack: ClusterStack, plan: ProductionPlan, rng: random.Random,
                   report: ChaosReport) -> None:
    await anyio.sleep(plan.step_every_s)  # the soak's jobs are under way first
    leader = await _leader(stack.settings)
    node = stack.nodes[leader]
    if plan.scenario == "pause":
        node.signal(signal.SIGSTOP)
        report.kills[f"nats paused {plan.pause_s:.0f} s"] += 1
        await anyio.sleep(plan.pause_s)  # the partition itself
        node.signal(signal.SIGCONT)
        return
    await anyio.to_thread.run_sync(node.kill)
    report.kills["nats node"] += 1
    await anyio.sleep(plan.nats_down_s)  # the node's outage
    await anyio.to_thread.run_sync(node.start)
    for service in ("api", "projector", "scheduler"):
        await anyio.sleep(plan.step_every_s)  # spacing the outages
        victim = stack.services[f"{service}-{rng.choice((1, 2))}"]
        await anyio.to_thread.run_sync(victim.kill)  # the supervisor restarts it
        report.kills[service] += 1


async def _stream_info(settings: Settings) -> StreamInfo:
    """The events stream's info, asked of the cluster by the services' user."""
    assert settings.nats_url is not None
    nc = await nats.connect(**connect_options(settings.nats_url), allow_reconnect=False)
    try:
        return await nc.jetstream().stream_info(Subjects(settings.namespace).events_stream)
    finally:
        await nc.close()


async def _leader(settings: Settings) -> str:
    """The node that leads the events stream now (the one whose loss hurts most)."""
    info = await _stream_info(settings)
    assert info.cluster is not None and info.cluster.leader is not None
    return str(info.cluster.leader)


async def _events(settings: Settings) -> tuple[int, int]:
    info = await _stream_info(settings)
    return int(info.state.messages), int(info.config.num_replicas or 1)
