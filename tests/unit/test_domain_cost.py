"""domain/cost.py: the one definition of what machines, runs, jobs, tokens and
organizations cost, and when a spending limit is reached."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openweights.domain import cost
from openweights.errors import SpendingLimitReached

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


M = cost.Machine(org="o", worker_id="w", price_per_hour=6.0, started_at=t(0), ended_at=t(60))
FREE = cost.Machine(org="o", worker_id="mine", price_per_hour=0.0, started_at=None)


def span(job: str, start: float, end: float | None, token: str = "tok", worker: str = "w"
         ) -> cost.RunSpan:
    return cost.RunSpan(org="o", job_id=job, run_id=f"run-{job}-{start}", worker_id=worker,
                        created_at=t(start), ended_at=None if end is None else t(end),
                        submitted_by=token)


def test_a_machine_costs_its_price_times_its_lifetime_or_until_now() -> None:
    assert cost.machine_cost(M, now=t(600)) == pytest.approx(6.0)
    alive = cost.Machine(org="o", worker_id="w", price_per_hour=6.0, started_at=t(0))
    assert cost.machine_cost(alive, now=t(30)) == pytest.approx(3.0)
    assert cost.machine_cost(alive, now=t(30), since=t(20)) == pytest.approx(1.0)
    assert cost.machine_cost(FREE, now=t(60)) == 0.0


def test_a_run_costs_its_share_of_its_machines_time_clipped_to_its_lifetime() -> None:
    assert cost.run_cost(span("a", 10, 40), M, now=t(600)) == pytest.approx(3.0)
    assert cost.run_cost(span("a", 50, None), M, now=t(600)) == pytest.approx(1.0)  # ends at 60
    assert cost.run_cost(span("a", 10, 40), M, now=t(20)) == pytest.approx(1.0)  # so far
    assert cost.run_cost(span("a", 10, 40), M, now=t(600), since=t(30)) == pytest.approx(1.0)
    assert cost.run_cost(span("a", 10, 40), None, now=t(600)) == 0.0
    assert cost.run_cost(span("a", 10, 40, worker="mine"), FREE, now=t(600)) == 0.0


def test_a_report_groups_runs_by_job_or_token_and_machines_by_worker_or_org() -> None:
    runs = [span("a", 0, 10, "t1"), span("a", 20, 30, "t1"), span("b", 30, 50, "t2")]
    now = t(600)
    assert cost.report("job", [M], runs, now) == pytest.approx({"a": 2.0, "b": 2.0})
    assert cost.report("token", [M], runs, now) == pytest.approx({"t1": 2.0, "t2": 2.0})
    assert cost.report("worker", [M, FREE], runs, now) == pytest.approx({"w": 6.0})
    assert cost.report("org", [M], runs, now) == pytest.approx({"o": 6.0})  # idle time too


def test_a_limit_is_reached_at_the_limit_and_the_error_states_spend_and_limit() -> None:
    assert not cost.over_limit(9.99, 10.0) and cost.over_limit(10.0, 10.0)
    assert not cost.over_limit(1e9, None)
    cost.check_spending("token tok", 9.0, 10.0)
    with pytest.raises(SpendingLimitReached, match=r"token tok .*spent \$10\.50 of \$10\.00"):
        cost.check_spending("token tok", 10.5, 10.0)
    assert "spent $10.50 of its $10.00 limit" in cost.limit_reason("token tok", 10.5, 10.0)
