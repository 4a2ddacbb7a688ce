"""bench/plots.py writes readable PNGs from synthetic samples (no servers, no benchmark)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from plots import curve, latency_cdf, throughput_vs_agents

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


def test_latency_cdf_per_panel_with_a_wide_spread(tmp_path: Path) -> None:
    rng = random.Random(1)
    panels = {f"N = {n}": {"ours": [rng.lognormvariate(-6, 1) for _ in range(200)],
                           "peer": [rng.uniform(0.001, 0.2) for _ in range(200)]}
              for n in (1, 4, 16)}
    path = latency_cdf(tmp_path / "out" / "lat.png", "pickup", panels,
                       goal=("goal p99 ≤", 0.05))
    assert_png(path)


def test_latency_cdf_single_panel_in_microseconds(tmp_path: Path) -> None:
    path = latency_cdf(tmp_path / "api.png", "round trips",
                       {"": {"a": [0.0003, 0.0004, 0.0005], "b": [0.0002]}}, unit="µs")
    assert_png(path)


def test_throughput_vs_agents(tmp_path: Path) -> None:
    series = {"ours": {1: [900.0, 950.0, 1000.0], 4: [1500.0], 16: [1700.0, 1800.0]},
              "peer": {1: [300.0, 320.0], 4: [400.0], 16: [410.0]}}
    assert_png(throughput_vs_agents(tmp_path / "t.png", "rates", series,
                                    goal=("goal ≥", 1000.0)))


def test_curve(tmp_path: Path) -> None:
    xs = [500, 1500, 2500]
    assert_png(curve(tmp_path / "c.png", "scale", xs,
                     {"µs/assignment": [40.0, 41.0, 39.0], "RSS (MB)": [120.0, 121.0, 121.0]},
                     "queue length"))
