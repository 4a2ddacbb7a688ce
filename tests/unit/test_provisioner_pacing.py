"""How fast an organization may start machines (issue 13, findings 2 and 5): pure rules,
told of deaths and asked with a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from openweights.services.provisioner.pacing import StartPacing, share

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_an_org_whose_machines_never_died_starts_whenever_it_needs() -> None:
    pacing = StartPacing(first_s=10, max_s=600)
    assert pacing.may_start("alpha", T0) and pacing.not_before("alpha") is None


def test_each_death_doubles_the_wait_up_to_the_most_and_only_for_its_org() -> None:
    pacing = StartPacing(first_s=10, max_s=60)
    death = 0.0
    for wait in (10, 20, 40, 60, 60):
        pacing.died("alpha", at(death))
        assert pacing.not_before("alpha") == at(death + wait)
        assert not pacing.may_start("alpha", at(death + wait - 0.001))
        assert pacing.may_start("alpha", at(death + wait))
        assert pacing.may_start("beta", at(death))  # another org is never slowed
        death += wait + 5  # the next machine starts when allowed and dies 5 s later


def test_deaths_closer_than_the_first_wait_are_one_incident() -> None:
    pacing = StartPacing(first_s=10, max_s=600)
    for s in (0, 0.5, 1, 2):  # a blip loses four machines at once
        pacing.died("alpha", at(s))
    assert pacing.not_before("alpha") == at(2 + 10)


def test_a_machine_that_ends_a_run_restarts_the_escalation_but_not_the_wait() -> None:
    pacing = StartPacing(first_s=10, max_s=600)
    for s in (0, 15, 40):
        pacing.died("alpha", at(s))
    assert pacing.not_before("alpha") == at(40 + 40)
    pacing.worked("alpha")  # another of its machines ended a run
    assert pacing.not_before("alpha") == at(40 + 40)  # the wait under way stays
    pacing.died("alpha", at(85))
    assert pacing.not_before("alpha") == at(85 + 10)  # counted as the first again
    pacing.worked("beta")  # an org without deaths: nothing to restart
    assert pacing.not_before("beta") is None


def test_an_org_whose_machines_stopped_dying_is_forgiven() -> None:
    pacing = StartPacing(first_s=10, max_s=60)
    for s in (0, 20, 50):
        pacing.died("alpha", at(s))
    assert pacing.not_before("alpha") == at(50 + 40)
    pacing.died("alpha", at(50 + 121))  # quiet for more than twice the longest wait
    assert pacing.not_before("alpha") == at(50 + 121 + 10)


def test_the_operators_room_is_shared_round_robin_up_to_each_demand() -> None:
    assert share(8, {"alpha": 12, "beta": 12}) == {"alpha": 4, "beta": 4}
    assert share(8, {"alpha": 1, "beta": 12, "gamma": 2}) == {"alpha": 1, "beta": 5,
                                                              "gamma": 2}
    assert share(3, {"beta": 5, "alpha": 5}) == {"alpha": 2, "beta": 1}  # name order
    assert share(0, {"alpha": 3}) == {"alpha": 0}
    assert share(-2, {"alpha": 3, "beta": 0}) == {"alpha": 0, "beta": 0}
    assert share(10, {"alpha": 2, "beta": -1}) == {"alpha": 2, "beta": 0}
