"""Fuzz benchmark: 10,000 hypothesis cases against the real services, counted per endpoint.

    python bench/fuzz.py                          # 10,000 cases
    python bench/fuzz.py --cases 500 --seed 7     # a short run

Setup: a private nats-server and Postgres in a temp dir (`_common.servers`), the
projector and the api service started by `services_thread`, and a real agent in this
process. The cases and the properties each one keeps are the CI fuzz tests' own
(`tests/fuzz/conftest.py`, loaded by path): typed, mutated and raw requests to every api
endpoint (the pinned upload ones included), whole uploads of corrupted datasets,
`whoami` requests and assignments on the agent's subject. Every case is followed by a
`jobs.list` that waits for the read models to include the whole log.

Printed: per endpoint, cases, accepted, rejected by error code, published without a
reply subject ("no reply asked"), and service errors (a property broken: must be 0),
then the first service errors with their cases. The exit status is 1 if there were any.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import servers

from openweights.config import Settings
from openweights.logs import configure_logging
from openweights.services.testing.stack import services_thread

ENGINE = Path(__file__).resolve().parents[1] / "tests" / "fuzz" / "conftest.py"
GIVE_UP_AFTER = 25  # service errors in a row: the stack is down, stop


def load_engine() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ow_fuzz_cases", ENGINE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


class Tally:
    def __init__(self) -> None:
        self.cases: Counter[str] = Counter()
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.kinds: Counter[str] = Counter()
        self.corruptions: Counter[str] = Counter()
        self.missteps: Counter[str] = Counter()
        self.errors: list[tuple[Any, Any]] = []
        self.in_a_row = 0

    def add(self, outcome: Any, case: Any) -> None:
        self.cases[outcome.label] += 1
        self.statuses[outcome.label][outcome.status] += 1
        if "/" in outcome.kind:  # an upload: "<corruption>/<misstep>"
            corruption, misstep = outcome.kind.split("/")
            self.kinds["upload"] += 1
            self.corruptions[corruption] += 1
            self.missteps[misstep] += 1
        else:
            self.kinds[outcome.kind.split(":")[0]] += 1
        if outcome.status == "error":
            self.errors.append((outcome, case))
            self.in_a_row += 1
        else:
            self.in_a_row = 0

    def table(self) -> str:
        lines = ["| endpoint | cases | accepted | rejected (by code) | no reply asked | "
                 "service errors |", "|---|---:|---:|---|---:|---:|"]
        total: Counter[str] = Counter()
        for label in sorted(self.cases):
            s = self.statuses[label]
            total += s
            lines.append(_row(label, self.cases[label], s))
        lines.append(_row("**all**", sum(self.cases.values()), total))
        lines.append("")
        for what, counts in (("cases by kind", self.kinds),
                             ("uploads by corruption", self.corruptions),
                             ("uploads by misstep", self.missteps)):
            lines.append(f"{what}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
        return "\n".join(lines)


def _row(label: str, cases: int, s: Counter[str]) -> str:
    # Uploads the client aborted on purpose, and unjudged cases, show in parentheses.
    rejected = sorted(((k.split(":", 1)[1] if k.startswith("rejected:") else f"({k})", v)
                       for k, v in s.items() if v and k not in ("accepted", "unanswered",
                                                                "error")),
                      key=lambda kv: -kv[1])
    codes = ", ".join(f"{code} {n}" for code, n in rejected) or "-"
    return (f"| {label} | {cases} | {s['accepted']} | {codes} | {s['unanswered']} | "
            f"{s['error']} |")


def run_cases(engine: ModuleType, stack: Settings, cases: int, seed_value: int) -> Tally:
    tally = Tally()
    started = time.monotonic()
    with services_thread(stack), start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(engine.Fuzzer.session(stack)) as fuzzer:

        @seed(seed_value)
        @settings(max_examples=cases, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(fuzzer.strategies.any_case())
        def one(case: Any) -> None:
            if tally.in_a_row >= GIVE_UP_AFTER:
                return
            tally.add(portal.call(fuzzer.check, case), case)
            done = sum(tally.cases.values())
            if done % 500 == 0:
                print(f"{done} cases, {len(tally.errors)} service errors, "
                      f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

        one()
    return tally


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    configure_logging(json=True)  # the services' logs go to stderr: the table owns stdout
    engine = load_engine()
    async with servers("fuzz") as (srv, database_url):
        stack = engine.fuzz_settings(Settings(home=srv.root / "home", nats_url=srv.nats.url,
                                              database_url=database_url, namespace="fuzz"))
        started = time.monotonic()
        tally = await anyio.to_thread.run_sync(run_cases, engine, stack, args.cases, args.seed)
        seconds = time.monotonic() - started
    done = sum(tally.cases.values())
    print(f"\n## Fuzzing: {done} cases in {seconds:.0f} s (seed {args.seed})\n")
    print(tally.table())
    unjudged = sum(s["unjudged"] for s in tally.statuses.values())
    if unjudged:
        print(f"\n{unjudged} case(s) unjudged: the agent stopped by itself meanwhile")
    if tally.in_a_row >= GIVE_UP_AFTER:
        print(f"\nstopped early: {GIVE_UP_AFTER} service errors in a row")
    for outcome, case in tally.errors[:20]:
        print(f"\n- {outcome.label} ({outcome.kind}): {outcome.detail}\n  case: {case!r:.600}")
    return 1 if tally.errors else 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
