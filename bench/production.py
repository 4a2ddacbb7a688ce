"""compose.yaml's topology on this machine (issue 19): 3 clustered nats-servers from
deploy/nats/nats.conf with the auth callout and R3 streams, weed mini as S3, Postgres,
2 api, 2 projectors, 2 schedulers and the provisioner, running jobs while parts fail.

    python bench/production.py [--scenario kill|pause|both] [--jobs 300] [--pause-s 30]

``kill``: the events stream's leader node is killed and restarted, then one api, one
projector and one scheduler. ``pause``: the leader node is SIGSTOPped for --pause-s.
Prints each scenario's table of checks; exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

from openweights.services.testing.production_chaos import ProductionPlan, run_production


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", choices=("kill", "pause", "both"), default="both")
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--agents", type=int, default=6)
    ap.add_argument("--pause-s", type=float, default=30.0)
    args = ap.parse_args()
    ok = True
    for scenario in ("kill", "pause") if args.scenario == "both" else (args.scenario,):
        plan = ProductionPlan(scenario=scenario, jobs=args.jobs, agents=args.agents,
                              pause_s=args.pause_s)
        with tempfile.TemporaryDirectory(prefix=f"ow-production-{scenario}-") as home:
            report = anyio.run(run_production, Path(home), plan)
        print(f"== {scenario}: {plan.jobs} jobs, {plan.agents} agents")
        print(report.table(), flush=True)
        ok = ok and report.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
