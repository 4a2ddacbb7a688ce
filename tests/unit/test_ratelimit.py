"""The limits of the log gate, run.log and upload slots, pure: time is an argument."""

from __future__ import annotations

from pathlib import Path

import pytest

from openweights.errors import InvalidRequest, Unavailable
from openweights.ratelimit import Buckets, EventRates, Kept, LogBounds, LogLimits
from openweights.services.api.uploads import Slots, Uploads


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    b = Buckets(rate=10, burst=100)
    assert b.level("k", 0.0) == 100
    b.spend("k", 100, 0.0)
    assert b.level("k", 0.0) == 0 and b.wait_s("k", 50, 0.0) == 5.0
    assert b.level("k", 3.0) == 30
    assert b.level("k", 1000.0) == 100  # never above its burst
    b.forget_full(1000.0)
    assert b._levels == {}


def test_an_org_over_its_size_keeps_about_three_quarters_newest() -> None:
    kept = Kept(max_bytes=1600)  # chunks of 100 bytes
    answers = [kept.add("org", 50) for _ in range(33)]
    assert answers[:32] == [None] * 32  # 32 x 50 = 1600: within
    assert answers[32] is not None and 20 <= answers[32] <= 25
    assert kept.total["org"] <= 1200
    assert kept.add("other", 50) is None


def _limits(**over: int) -> LogLimits:
    bounds = {"run_bytes_per_s": 10, "run_burst_bytes": 100, "run_max_bytes": 1000,
              "org_bytes_per_s": 10, "org_burst_bytes": 150, "org_max_bytes": 10_000, **over}
    return LogLimits(LogBounds(**bounds))


def test_a_line_is_refused_by_the_first_limit_it_passes() -> None:
    limits = _limits()
    assert limits.refusal("o", "r1", 100, 0.0) is None
    assert "this run prints more than 10 B/s" in (limits.refusal("o", "r1", 1, 0.0) or "")
    assert limits.refusal("o", "r2", 50, 0.0) is None
    assert "organization's runs print more" in (limits.refusal("o", "r2", 1, 0.0) or "")
    assert limits.refusal("other", "r1", 100, 0.0) is None  # keyed by (org, run)


def test_a_run_keeps_at_most_its_size_however_slowly_it_prints() -> None:
    limits = _limits(run_max_bytes=250)
    assert [limits.refusal("o", "r", 100, t * 100.0) is None for t in range(3)] == [
        True, True, False]
    assert "the most a run keeps there" in (limits.refusal("o", "r", 100, 1e4) or "")
    limits.sweep(1e4 + LogLimits.IDLE_S + 1)  # silent for an hour: forgotten
    assert limits.run_kept == {}


def test_run_events_have_a_rate_per_run_and_per_org() -> None:
    rates = EventRates(run_bytes_per_s=100, org_bytes_per_s=150, burst_s=1.0)
    assert rates.refusal("o", "r1", 100, 0.0) is None
    assert "this run logs more than 100 B/s" in (rates.refusal("o", "r1", 10, 0.0) or "")
    assert "organization's runs log" in (rates.refusal("o", "r2", 60, 0.0) or "")
    assert rates.refusal("o", "r1", 10, 1.0) is None


def test_upload_slots_go_first_to_an_org_holding_none(tmp_path: Path) -> None:
    uploads = Uploads(tmp_path, "i", idle_s=600, slots=Slots(users=8, per_org=8, agents=2,
                                                           per_worker=1))
    held: dict[str, int] = {}
    for org in ("a", "b", "c", "d"):
        while True:
            try:
                uploads.begin(org, "f", "blob")
            except Unavailable:
                break
            held[org] = held.get(org, 0) + 1
    assert held == {"a": 4, "b": 2, "c": 1, "d": 1}  # each held upload keeps a slot free
    with pytest.raises(Unavailable, match="8 of the 8 user upload slots"):
        uploads.begin("e", "f", "blob")
    uploads.begin("a", "log", "log", worker="w1")  # agents: a pool of their own
    with pytest.raises(InvalidRequest, match="worker 'w1' has 1 uploads"):
        uploads.begin("a", "log", "log", worker="w1")
    uploads.begin("b", "log", "log", worker="w2")
