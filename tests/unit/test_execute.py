"""The one command path (``Executor.execute``) on the in-memory log: decide on the fold's
state, append conditionally and idempotently, catch up and decide again on a conflict,
and let domain errors reach the caller."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from openweights.adapters.memory import InMemoryEventLog
from openweights.domain.aggregates import JOB, SECRET
from openweights.domain.commands import (
    AssignJob,
    CancelJob,
    RemoveSecret,
    SetSecret,
    StartRun,
    StoreRunLog,
    SubmitJob,
)
from openweights.errors import ConcurrencyConflict, IllegalTransition
from openweights.events import Actor, JobCanceled, JobSpec, SecretSet, decode
from openweights.execute import Executor
from openweights.fold import Fold
from openweights.subjects import Subjects

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BY = Actor("client", "tok-1")
SUBJECTS = Subjects("t")
SPEC = JobSpec(type="custom", model=None, params={}, script="true", docker_image="img",
               requires_vram_gb=None, allowed_hardware=None)


class Stack:
    """A log, a fold that follows it as a live fold would, and the executor on both."""

    def __init__(self) -> None:
        self.log = InMemoryEventLog()
        self.fold = Fold()
        self.log.followers.append(self.fold.apply)
        self.executor = Executor(self.log, self.fold, SUBJECTS, clock=lambda: NOW)

    def submit(self, job_id: str = "j1") -> SubmitJob:
        return SubmitJob(job_id=job_id, org="o", spec=SPEC)


async def test_a_decision_is_appended_and_its_state_returned() -> None:
    s = Stack()
    done = await s.executor.execute("o", JOB, "j1", s.submit(), BY, "req-1")
    assert [e.tag for e in done.events] == ["job.submitted/2"]
    assert done.seq == 1 and done.state is not None and done.state.status == "pending"
    assert done.events[0].at == NOW and done.events[0].by == BY  # the injected clock
    assert s.fold.get("o", JOB, "j1") == done.state
    assert s.log.messages[0].subject == "t.o.job.j1"


async def test_a_command_that_changes_nothing_appends_nothing() -> None:
    s = Stack()
    await s.executor.execute("o", JOB, "j1", s.submit(), BY)
    again = await s.executor.execute("o", JOB, "j1", s.submit(), BY)
    # The reply's position is the state's: a read after it sees the job as submitted.
    assert (again.events, again.seq) == ([], 1)
    assert len(s.log.messages) == 1


async def test_a_retried_request_is_applied_once() -> None:
    s = Stack()
    await s.executor.execute("o", SECRET, "K", SetSecret(org="o", name="K", ciphertext="a"),
                             BY, "req-1")
    # The same request again (its reply was lost): setting a secret always decides an
    # event, and the log drops it as a duplicate of the first append.
    done = await s.executor.execute("o", SECRET, "K", SetSecret(org="o", name="K",
                                                                ciphertext="a"), BY, "req-1")
    assert done.seq == 1 and len(s.log.messages) == 1
    other = await s.executor.execute("o", SECRET, "K", SetSecret(org="o", name="K",
                                                                 ciphertext="a"), BY, "req-2")
    assert other.seq == 2 and len(s.log.messages) == 2


async def test_two_decisions_of_one_request_on_one_aggregate_both_append() -> None:
    """An agent's end of a timed-out run cancels the job, then stores the run's log: two
    decisions under one request id, neither a retry of the other."""
    s = Stack()
    await s.executor.execute("o", JOB, "j1", [s.submit(), AssignJob(worker_id="w1", run_id="r1")],
                             BY)
    by = Actor("agent", "w1")
    cancel = CancelJob(reason="timeout", run_id="r1", worker_id="w1")
    first = await s.executor.execute("o", JOB, "j1", cancel, by, "req-end")
    second = await s.executor.execute(
        "o", JOB, "j1", StoreRunLog(run_id="r1", worker_id="w1", log_file="log:f"), by,
        "req-end")
    assert [e.tag for e in first.events + second.events] == ["job.canceled/1",
                                                             "run.log_stored/1"]
    assert second.seq > first.seq and len(s.log.messages) == 3


async def test_several_commands_are_one_decision_in_one_message() -> None:
    s = Stack()
    cmds = [s.submit(), AssignJob(worker_id="w1", run_id="r1"),
            StartRun(run_id="r1", worker_id="w1")]
    done = await s.executor.execute("o", JOB, "j1", cmds, BY)
    assert [e.tag for e in done.events] == ["job.submitted/2", "job.assigned/1",
                                            "run.started/1"]
    assert len(s.log.messages) == 1 and len(decode(s.log.messages[0].data)) == 3
    assert done.state is not None and done.state.open_run is not None


async def test_a_domain_error_reaches_the_caller_and_nothing_is_appended() -> None:
    s = Stack()
    with pytest.raises(IllegalTransition, match="secret in state 'absent'"):
        await s.executor.execute("o", SECRET, "K", RemoveSecret(), BY)
    assert s.log.messages == []


async def test_a_conflict_with_a_change_the_fold_has_not_seen_is_decided_again() -> None:
    s = Stack()
    await s.executor.execute("o", JOB, "j1", s.submit(), BY)
    # Another writer cancels the job; this service's fold lags behind it for now.
    s.log.followers.clear()
    cancel = JobCanceled(at=NOW, by=BY, job_id="j1", run_id=None, reason="elsewhere")
    await s.log.append("t.o.job.j1", [cancel], expected_last_subject_seq=1)
    s.log.followers.append(s.fold.apply)
    missed = list(s.log.messages[1:])

    async def wait_seq(seq: int) -> None:  # the fold catches up when asked to wait
        if s.fold.seq < seq:
            s.fold.apply(missed)

    s.fold.wait_seq = wait_seq  # type: ignore[method-assign]
    # Assigning decides "pending" on the stale state; the append conflicts; after catching
    # up the job is canceled and the refusal is the domain's, on the latest state.
    with pytest.raises(IllegalTransition, match="canceled"):
        await s.executor.execute("o", JOB, "j1", AssignJob(worker_id="w1", run_id="r1"), BY)
    # Canceling again decides on the latest state too, and changes nothing.
    done = await s.executor.execute("o", JOB, "j1", CancelJob(), BY)
    assert done.events == [] and len(s.log.messages) == 2


async def test_an_aggregate_that_keeps_changing_fails_after_a_bound() -> None:
    s = Stack()

    class Racing(InMemoryEventLog):
        """Someone else appends to the subject just before each of our appends."""

        async def append(self, subject, events, *, expected_last_subject_seq, msg_id=None):  # type: ignore[no-untyped-def]
            if expected_last_subject_seq is not None:
                await super().append(subject, [SecretSet(at=NOW, by=BY, org="o", name="K",
                                                         ciphertext="theirs")],
                                     expected_last_subject_seq=None)
            return await super().append(subject, events,
                                        expected_last_subject_seq=expected_last_subject_seq,
                                        msg_id=msg_id)

    s.log = Racing()
    s.log.followers.append(s.fold.apply)
    s.executor = Executor(s.log, s.fold, SUBJECTS, clock=lambda: NOW)
    with pytest.raises(ConcurrencyConflict, match="kept changing"):
        await s.executor.execute("o", SECRET, "K", SetSecret(org="o", name="K",
                                                             ciphertext="ours"), BY)
    assert not any(b"ours" in m.data for m in s.log.messages)


async def test_an_unsettled_decision_returns_the_state_it_made() -> None:
    s = Stack()
    s.log.followers.clear()  # nothing folds: settling would wait forever
    done = await s.executor.execute("o", JOB, "j1", s.submit(), BY, settle=False)
    assert done.state is not None and done.state.status == "pending"
    assert s.fold.get("o", JOB, "j1") is None
