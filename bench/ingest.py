"""Event ingest: a running job logging metric events as fast as it can (``ow.run.log``).

    python bench/ingest.py [--events 100000] [--runs 3]

Measures events/s appended (every batch acknowledged by the api service) and events/s
projected (the read model's checkpoint reaches the last one), beside raw
``js.publish_async`` of the same number of 200-byte messages in the same run.
Goal: appended >= 0.5 x raw, projected >= 20,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
import uuid
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).parent))
from _common import servers

from openweights import AsyncOpenWeights, OpenWeights
from openweights.adapters.postgres.db import connect
from openweights.adapters.projected import ProjectionWatcher
from openweights.config import Settings
from openweights.logs import configure_logging
from openweights.services.testing.stack import services_thread
from openweights.subjects import Subjects


async def raw_publish(nats_url: str, n: int) -> float:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = f"RAW{uuid.uuid4().hex[:6]}"
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    payload = b"x" * 200
    started = time.perf_counter()
    for _ in range(n):
        await js.publish_async(f"{stream}.run", payload)
    await js.publish_async_completed()
    took = time.perf_counter() - started
    await js.delete_stream(stream)
    await nc.close()
    return n / took


async def wait_projected(settings: Settings, seq: int) -> float:
    nc = await nats.connect(settings.nats_url)
    conn = await connect(settings.database_url)  # type: ignore[arg-type]
    watcher = ProjectionWatcher(nc, Subjects(settings.namespace))
    await watcher.start(conn)
    await watcher.wait_projected(seq)
    done = time.perf_counter()
    await conn.close()
    await nc.close()
    return done


def log_events(settings: Settings, n: int, blocking: bool) -> tuple[float, float, int]:
    """(append seconds, projected-at perf_counter, last seq) for n events of one run."""
    if blocking:
        ow = OpenWeights(settings=settings)
        ow.run.log({"warmup": 0})
        ow.run.flush()
        started = time.perf_counter()
        for i in range(n):
            ow.run.log({"step": i, "loss": 1.0 / (i + 1), "lr": 1e-4})
        ow.run.flush()
        appended = time.perf_counter() - started
        last = ow.transport.seen_seq
        ow.close()
        return appended, started, last

    async def run() -> tuple[float, float, int]:
        aow = AsyncOpenWeights(settings=settings)
        await aow.run.log({"warmup": 0})
        await aow.run.flush()
        started = time.perf_counter()
        for i in range(n):
            await aow.run.log({"step": i, "loss": 1.0 / (i + 1), "lr": 1e-4})
        await aow.run.flush()
        appended = time.perf_counter() - started
        last = aow.transport.seen_seq
        await aow.close()
        return appended, started, last

    return asyncio.run(run())


async def one_run(n: int) -> dict[str, float]:
    async with servers("ingest") as (srv, database_url):
        settings = Settings(home=srv.root / "home", nats_url=srv.nats.url,
                            database_url=database_url, namespace=f"b{uuid.uuid4().hex[:8]}")
        raw = await raw_publish(srv.nats.url, n)
        out = {"raw_publish_async": raw}
        with services_thread(settings, ("projector", "api")):
            for mode, blocking in (("async", False), ("blocking", True)):
                appended, started, last = await asyncio.to_thread(
                    log_events, settings, n, blocking)
                projected_at = await wait_projected(settings, last)
                out[f"{mode}_appended"] = n / appended
                out[f"{mode}_projected"] = n / (projected_at - started)
        return out


def main() -> int:
    configure_logging(json=True, level=logging.WARNING)  # the services' logs: stderr only
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    results = [asyncio.run(one_run(args.events)) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    raw = med["raw_publish_async"]
    print(f"event ingest, {args.events:,} events per run, {args.runs} run(s), medians")
    print(f"{'figure':<34}{'events/s':>12}{'ratio to raw':>14}  goal")
    print(f"{'raw js.publish_async (baseline)':<34}{raw:>12,.0f}{1.0:>14.2f}")
    for mode in ("async", "blocking"):
        a, p = med[f"{mode}_appended"], med[f"{mode}_projected"]
        print(f"{mode + ' ow.run.log appended':<34}{a:>12,.0f}{a / raw:>14.2f}  >= 0.50")
        print(f"{mode + ' ow.run.log projected':<34}{p:>12,.0f}{p / raw:>14.2f}  >= 20,000/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
