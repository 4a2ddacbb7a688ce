"""The chaos soak (issue 6): 1,000 jobs on 16 agents while parts are killed.

    python bench/chaos.py [--jobs 1000] [--agents 16] [--quick]

Starts its own stack (processes, embedded nats-server and Postgres) in a temp dir,
prints the table of checks, exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

from openweights.services.testing.chaos import ChaosPlan, run_chaos


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="100 jobs, short cancels")
    args = ap.parse_args()
    plan = ChaosPlan(jobs=args.jobs, agents=args.agents)
    if args.quick:
        plan = ChaosPlan(jobs=100, agents=6, cancel_after_s=(0.5, 2.0), metrics_per_job=20,
                         service_kills=1)
    with tempfile.TemporaryDirectory(prefix="ow-chaos-") as home:
        report = anyio.run(run_chaos, Path(home), plan)
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
