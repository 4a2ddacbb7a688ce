"""A job whose runs lose their machine ``MAX_LOST_RUNS`` times in a row fails instead of
being requeued forever (issue 13, finding 2): given events, when the requeue, then events."""

from __future__ import annotations

from openweights.domain import job
from openweights.domain.commands import RequeueJob
from openweights.events import Actor, Event, JobFailed, JobRequeued, JobReset
from tests.unit.test_domain_job import (
    JOB,
    NOW,
    SPEC,
    T0,
    W1,
    assigned,
    completed,
    failed,
    given,
    nested,
    requeued,
    started,
    submitted,
    when,
)

PROVISIONER = Actor("provisioner")
GONE = "worker lost: its machine is gone"


def lost(n: int, *, start: bool = False) -> list[Event]:
    """Run ``r<n>`` assigned (and started), then given back as failed: its machine died."""
    run = f"r{n}"
    return [assigned(run), *([started(run)] if start else []), requeued(run)]


def handed_back(n: int) -> list[Event]:
    """Run ``r<n>`` given back by a worker that shut down gracefully."""
    return [assigned(f"r{n}"), JobRequeued(at=T0, by=Actor("agent", W1), job_id=JOB,
                                           run_id=f"r{n}", worker_id=W1, run_status="canceled",
                                           reason="worker shut down")]


def requeue(n: int, run_status: str = "failed", reason: str = GONE) -> RequeueJob:
    return RequeueJob(run_id=f"r{n}", worker_id=W1, run_status=run_status,  # type: ignore[arg-type]
                      reason=reason)


def test_the_third_run_in_a_row_that_loses_its_machine_fails_the_job_saying_so() -> None:
    state = given(submitted(), *lost(1), *lost(2, start=True), assigned("r3"), started("r3"))
    assert state is not None and state.lost_in_a_row == 2

    events = when(state, requeue(3), PROVISIONER)

    assert len(events) == 1 and isinstance(events[0], JobFailed)
    fail = events[0]
    assert (fail.at, fail.by, fail.run_id, fail.worker_id) == (NOW, PROVISIONER, "r3", W1)
    assert f"lost their machine {job.MAX_LOST_RUNS} times in a row" in fail.error
    assert GONE in fail.error and "submit it again" in fail.error
    after = job.evolve(state, fail)
    assert after.status == "failed" and after.runs[-1].status == "failed"
    assert after.lost_in_a_row == 0


def test_fewer_lost_runs_in_a_row_requeue_the_job() -> None:
    for history in ([submitted(), assigned("r1")], [submitted(), *lost(1), assigned("r2")]):
        state = given(*history)
        n = len(state.runs) if state is not None else 0
        [event] = when(state, requeue(n), PROVISIONER)
        assert isinstance(event, JobRequeued) and event.run_status == "failed"
        assert job.evolve(state, event).lost_in_a_row == n


def test_a_run_that_ends_otherwise_or_a_reset_ends_the_row() -> None:
    # Two lost, one handed back by a shutting-down worker, two lost: still requeued.
    state = given(submitted(), *lost(1), *lost(2), *handed_back(3), *lost(4), assigned("r5"))
    assert state is not None and state.lost_in_a_row == 1
    assert isinstance(when(state, requeue(5), PROVISIONER)[0], JobRequeued)

    # Two lost, then the process failed and it was submitted again: a fresh row.
    reset = JobReset(at=T0, by=Actor("client", "tok-1"), **nested(SPEC))
    state = given(submitted(), *lost(1), *lost(2), assigned("r3"), failed("r3"), reset,
                  *lost(4), assigned("r5"))
    assert state is not None and state.lost_in_a_row == 1
    assert isinstance(when(state, requeue(5), PROVISIONER)[0], JobRequeued)

    # A job failed for its lost runs and resubmitted gets its tries again.
    failed_for_lost = given(submitted(), *lost(1), *lost(2), assigned("r3"))
    [fail] = when(failed_for_lost, requeue(3), PROVISIONER)
    state = given(submitted(), *lost(1), *lost(2), assigned("r3"), fail, reset, assigned("r4"))
    assert state is not None and state.lost_in_a_row == 0
    assert isinstance(when(state, requeue(4), PROVISIONER)[0], JobRequeued)


def test_a_graceful_hand_back_is_never_counted_and_never_fails_the_job() -> None:
    state = given(submitted(), *lost(1), *lost(2), assigned("r3"))
    [event] = when(state, requeue(3, "canceled", "worker shut down"), Actor("agent", W1))
    assert isinstance(event, JobRequeued) and event.run_status == "canceled"
    assert job.evolve(state, event).lost_in_a_row == 0


def test_the_count_is_folded_from_the_events_alone() -> None:
    """Replay rebuilds it: the same history folded twice gives the same count, and a
    completed run leaves none."""
    history = [submitted(), *lost(1), *lost(2, start=True)]
    one, two = given(*history), given(*history)
    assert one == two and one is not None and one.lost_in_a_row == 2
    done = given(*history, assigned("r3"), started("r3"), completed("r3"))
    assert done is not None and done.lost_in_a_row == 0
