"""How the agent reports a run: given what happened, when this, then that request."""

from __future__ import annotations

import pytest

from openweights.services.agent.reporting import (
    COLLECT,
    START_RUN,
    TRANSITIONS,
    EndRun,
    Input,
    Request,
    RunProtocolError,
    RunReport,
    State,
    ending,
)

In = Input
OPTIMISTIC_RUNNING = (In.BEGIN_OPTIMISTIC,)
CONFIRMING = (In.BEGIN_OPTIMISTIC, In.LINGER_PASSED)
CONFIRMED_RUNNING = (In.BEGIN_CONFIRMED, In.START_ACCEPTED, In.SPAWNED)


def given(*events: Input) -> RunReport:
    report = RunReport()
    for event in events:
        report.handle(event)
    return report


def then(report: RunReport, *steps: tuple[Input, Request | None]) -> None:
    """Each input in turn gets its expected request."""
    for event, expected in steps:
        assert report.handle(event) == expected, f"after {event.name}"


# -- an optimistic start: the command runs while the start is confirmed ----------------
@pytest.mark.parametrize(("exit_", "end"), [
    (In.COMPLETED, EndRun("completed", with_start=True)),
    (In.FAILED, EndRun("failed", with_start=True)),
])
def test_a_quick_job_reports_its_start_with_its_end(exit_: Input, end: EndRun) -> None:
    report = given(*OPTIMISTIC_RUNNING)
    then(report, (exit_, COLLECT), (In.COLLECTED, end))
    assert report.state is State.DONE and report.over


def test_a_slow_job_confirms_its_start_before_it_ends() -> None:
    report = given(*OPTIMISTIC_RUNNING)
    then(report, (In.LINGER_PASSED, START_RUN), (In.START_ACCEPTED, None),
         (In.COMPLETED, COLLECT), (In.COLLECTED, EndRun("completed")))


def test_a_start_refused_while_the_command_runs_stops_it_and_reports_nothing() -> None:
    report = given(*CONFIRMING)
    then(report, (In.START_REFUSED, None))
    assert report.state is State.REFUSED  # the agent stops the command
    then(report, (In.STOPPED_REFUSED, None))
    assert report.state is State.DROPPED and report.over


@pytest.mark.parametrize("ended", [In.COMPLETED, In.FAILED, In.STOPPED_SHUTDOWN])
def test_a_refused_run_reports_nothing_however_its_command_ended(ended: Input) -> None:
    report = given(*CONFIRMING, In.START_REFUSED)
    then(report, (ended, None))
    assert report.state is State.DROPPED


def test_a_command_that_ends_while_its_start_is_confirmed_waits_for_the_answer() -> None:
    report = given(*CONFIRMING)
    then(report, (In.COMPLETED, None))  # nothing before the api has answered
    assert report.state is State.SETTLING
    then(report, (In.START_ACCEPTED, COLLECT), (In.COLLECTED, EndRun("completed")))


def test_a_command_that_ended_before_its_start_was_refused_reports_nothing() -> None:
    report = given(*CONFIRMING, In.FAILED)
    then(report, (In.START_REFUSED, None))
    assert report.state is State.DROPPED


@pytest.mark.parametrize(("stopped", "end"), [
    (In.STOPPED_CANCELED, EndRun("canceled")),
    (In.STOPPED_TIMEOUT, EndRun("timeout")),
    (In.STOPPED_SHUTDOWN, EndRun("requeue", stop_first=True)),
])
def test_a_command_stopped_before_its_start_was_sent_sends_the_start_first_alone(
        stopped: Input, end: EndRun) -> None:
    report = given(*OPTIMISTIC_RUNNING)
    then(report, (stopped, START_RUN), (In.START_ACCEPTED, COLLECT), (In.COLLECTED, end))
    assert not end.with_start


def test_a_cancel_during_an_optimistic_start_that_the_api_refuses_reports_nothing() -> None:
    report = given(*OPTIMISTIC_RUNNING, In.STOPPED_CANCELED)
    then(report, (In.START_REFUSED, None))
    assert report.state is State.DROPPED


# -- a confirmed start: the command waits for the api ----------------------------------
def test_a_confirmed_start_spawns_the_command_once_accepted() -> None:
    report = RunReport()
    then(report, (In.BEGIN_CONFIRMED, START_RUN), (In.START_ACCEPTED, None))
    assert report.state is State.STARTED  # the agent spawns the command now
    then(report, (In.SPAWNED, None), (In.FAILED, COLLECT), (In.COLLECTED, EndRun("failed")))


def test_a_refused_confirmed_start_runs_nothing_and_reports_nothing() -> None:
    report = given(In.BEGIN_CONFIRMED)
    then(report, (In.START_REFUSED, None))
    assert report.state is State.DROPPED and report.over


def test_a_run_whose_gpus_cannot_be_freed_is_given_back() -> None:
    report = given(In.BEGIN_CONFIRMED, In.START_ACCEPTED)
    then(report, (In.UNRUNNABLE, EndRun("requeue")))
    assert report.over


@pytest.mark.parametrize(("stopped", "end"), [
    (In.STOPPED_CANCELED, EndRun("canceled")),
    (In.STOPPED_TIMEOUT, EndRun("timeout")),
    (In.STOPPED_SHUTDOWN, EndRun("requeue", stop_first=True)),  # the agent's stop first
])
def test_a_stopped_command_reports_why_after_its_log(stopped: Input, end: EndRun) -> None:
    report = given(*CONFIRMED_RUNNING)
    then(report, (stopped, COLLECT), (In.COLLECTED, end))


# -- the agent stops -------------------------------------------------------------------
def test_an_assignment_never_begun_is_started_and_given_back() -> None:
    report = RunReport()
    then(report, (In.GIVE_BACK, START_RUN), (In.START_ACCEPTED, EndRun("requeue")))
    assert report.over


def test_an_assignment_never_begun_and_refused_is_dropped() -> None:
    report = given(In.GIVE_BACK)
    then(report, (In.START_REFUSED, None))
    assert report.state is State.DROPPED


# -- illegal transitions ---------------------------------------------------------------
@pytest.mark.parametrize(("events", "event"), [
    ((), In.SPAWNED),
    (OPTIMISTIC_RUNNING, In.STOPPED_REFUSED),  # nothing was refused
    (OPTIMISTIC_RUNNING, In.START_ACCEPTED),  # nothing was sent
    (CONFIRMED_RUNNING, In.LINGER_PASSED),
    ((*CONFIRMED_RUNNING, In.COMPLETED, In.COLLECTED), In.COLLECTED),
    ((In.BEGIN_CONFIRMED, In.START_REFUSED), In.COMPLETED),
])
def test_an_event_the_state_does_not_allow_is_an_error_naming_both(
        events: tuple[Input, ...], event: Input) -> None:
    report = given(*events)
    state = report.state
    with pytest.raises(RunProtocolError, match=f"{state.name} cannot take {event.name}"):
        report.handle(event)
    assert report.state is state


# -- properties over every path --------------------------------------------------------
def _paths(report_events: tuple[Input, ...] = (), depth: int = 9):
    """Every sequence of allowed inputs from a new run, with the requests they got."""
    report = given(*report_events)
    if report.over or depth == 0:
        yield report_events, report
        return
    for event in Input:
        if (report.state, event) in TRANSITIONS:
            yield from _paths((*report_events, event), depth - 1)


def _requests(events: tuple[Input, ...]) -> list[Request | None]:
    report = RunReport()
    return [report.handle(event) for event in events]


def test_every_path_ends_with_one_end_or_nothing_and_a_refusal_silences_the_run() -> None:
    finals = 0
    for events, report in _paths():
        requests = _requests(events)
        ends = [r for r in requests if isinstance(r, EndRun)]
        assert len(ends) <= 1, events
        if In.START_REFUSED in events:
            after = requests[events.index(In.START_REFUSED):]
            assert all(r is None for r in after), events
            assert not ends
        assert report.over, f"{events} leaves the run unfinished"
        assert (report.state is State.DONE) == bool(ends), events
        finals += 1
    assert finals > 10


def test_a_start_goes_with_the_end_only_if_never_sent_and_only_for_an_exit() -> None:
    for events, _ in _paths():
        requests = _requests(events)
        for i, r in enumerate(requests):
            if isinstance(r, EndRun):
                sent = START_RUN in requests[:i]
                assert r.with_start == (not sent), events
                if r.with_start:
                    assert r.outcome in ("completed", "failed"), events


def test_a_command_that_ran_has_its_log_collected_before_its_end() -> None:
    for events, _ in _paths():
        requests = _requests(events)
        ran = In.SPAWNED in events or In.BEGIN_OPTIMISTIC in events
        for i, r in enumerate(requests):
            if isinstance(r, EndRun) and ran:
                assert COLLECT in requests[:i], events


@pytest.mark.parametrize(("status", "why", "expected"), [
    ("completed", "canceled", In.COMPLETED),
    ("failed", "shutdown", In.FAILED),
    ("canceled", "canceled", In.STOPPED_CANCELED),
    ("canceled", "timeout", In.STOPPED_TIMEOUT),
    ("canceled", "shutdown", In.STOPPED_SHUTDOWN),
    ("canceled", "refused", In.STOPPED_REFUSED),
])
def test_a_process_outcome_and_the_stop_reason_name_the_ending(
        status: str, why: str, expected: Input) -> None:
    assert ending(status, why) is expected
