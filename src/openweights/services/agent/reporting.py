"""How one run is reported to the api: a state machine without I/O.

The agent tells a :class:`RunReport` what happened (an :class:`Input`) and it answers
with the one request to send next, or None when there is nothing to send (yet). The
rules, all in :data:`TRANSITIONS`:

- A run starts *optimistically* (the command spawns at once, when the agent's copy of
  the org's secrets is the assignment's version) or *confirmed* (the start's reply comes
  first). An optimistic start is confirmed once the command has run ``QUICK_JOB_S``; a
  command that completes or fails before reports its start with its end
  (``with_start``: one request and one append instead of two of each). One stopped
  before that sends its start first, on its own: ``with_start`` is only for those two.
- A start the api refuses means the run is not ours: the command is stopped and nothing
  more is reported, not even its log. A start sent while the command runs is always
  answered before anything else is reported about the run.
- A command that ended has its log stored and its uploads reported (:data:`COLLECT`),
  then its end: completed, failed, canceled, timeout; requeue when the agent shut it
  down, after the agent's stop is reported (the scheduler would hand the run back to a
  worker still active).
- A run the agent never began while stopping is started and given back (requeue); one
  that cannot run here (its GPUs are held by another container) is given back too.

Each step is a dict lookup and two attribute sets: the agent makes one per change of a
run, on its hot path.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from openweights.errors import OpenWeightsError

__all__ = ["COLLECT", "REQUEUE", "START_RUN", "TRANSITIONS", "Collect", "EndRun", "Input",
           "Outcome", "Request", "RunProtocolError", "RunReport", "StartRun", "State",
           "ending"]

Outcome = Literal["completed", "failed", "timeout", "canceled", "requeue"]  # agent.run.end


class State(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: Enum's hash is a Python call

    ASSIGNED = "assigned"  # ours to start: nothing sent, nothing spawned
    STARTING = "starting"  # the start is sent; the command waits for its reply
    STARTED = "started"  # the start is confirmed; the command is not spawned yet
    LINGERING = "lingering"  # the command runs; its start is not sent yet
    CONFIRMING = "confirming"  # the command runs; its start is sent, not answered
    RUNNING = "running"  # the command runs; its start is confirmed
    REFUSED = "refused"  # the start was refused while the command runs: it is stopped
    SETTLING = "settling"  # the command ended; its start awaits the api's answer
    COLLECTING = "collecting"  # the command ended; its log and uploads are being stored
    RETURNING = "returning"  # never begun: started only to be given back
    DONE = "done"  # its end is sent (final)
    DROPPED = "dropped"  # not ours: nothing is reported (final)


class Input(enum.Enum):
    __hash__ = object.__hash__

    BEGIN_OPTIMISTIC = "begin optimistic"  # the command spawns at once
    BEGIN_CONFIRMED = "begin confirmed"  # the command spawns once the start is confirmed
    GIVE_BACK = "give back"  # the agent stops before the run began
    LINGER_PASSED = "linger passed"  # QUICK_JOB_S since an optimistic spawn
    START_ACCEPTED = "start accepted"
    START_REFUSED = "start refused"
    SPAWNED = "spawned"  # after a confirmed start
    UNRUNNABLE = "unrunnable"  # after a confirmed start: the GPUs cannot be freed
    COMPLETED = "completed"  # the command exited 0
    FAILED = "failed"  # it exited otherwise, or a signal ended it
    STOPPED_CANCELED = "stopped: canceled"  # we stopped it, and why
    STOPPED_TIMEOUT = "stopped: timeout"
    STOPPED_SHUTDOWN = "stopped: shutdown"
    STOPPED_REFUSED = "stopped: refused"
    COLLECTED = "collected"  # its log is stored and its uploads are reported


@dataclass(frozen=True, slots=True)
class StartRun:
    """Send ``agent.run.start``; tell the report its answer (START_ACCEPTED or
    START_REFUSED)."""


@dataclass(frozen=True, slots=True)
class Collect:
    """Store the run's log and report its uploads; then tell the report COLLECTED."""


@dataclass(frozen=True, slots=True)
class EndRun:
    """Send ``agent.run.end`` with ``outcome``. ``with_start``: the start goes with it.
    ``stop_first``: report the agent's stop before (and let no second signal stop
    either halfway)."""

    outcome: Outcome
    with_start: bool = False
    stop_first: bool = False


Request = StartRun | Collect | EndRun
START_RUN: Final = StartRun()
COLLECT: Final = Collect()
REQUEUE: Final = EndRun("requeue")


class _EndOfRun:
    """In the table: the end the command's ending calls for (see ``_END_OF``)."""


END: Final = _EndOfRun()

S, In = State, Input
_EXITS = (In.COMPLETED, In.FAILED)
_STOPS = (In.STOPPED_CANCELED, In.STOPPED_TIMEOUT, In.STOPPED_SHUTDOWN)
_ENDINGS = (*_EXITS, *_STOPS)

# (state, input) -> (next state, what to send). Anything else is a RunProtocolError.
TRANSITIONS: dict[tuple[State, Input], tuple[State, Request | _EndOfRun | None]] = {
    (S.ASSIGNED, In.BEGIN_OPTIMISTIC): (S.LINGERING, None),
    (S.ASSIGNED, In.BEGIN_CONFIRMED): (S.STARTING, START_RUN),
    (S.ASSIGNED, In.GIVE_BACK): (S.RETURNING, START_RUN),
    (S.STARTING, In.START_ACCEPTED): (S.STARTED, None),
    (S.STARTING, In.START_REFUSED): (S.DROPPED, None),
    (S.STARTED, In.SPAWNED): (S.RUNNING, None),
    (S.STARTED, In.UNRUNNABLE): (S.DONE, REQUEUE),
    (S.RETURNING, In.START_ACCEPTED): (S.DONE, REQUEUE),
    (S.RETURNING, In.START_REFUSED): (S.DROPPED, None),
    (S.LINGERING, In.LINGER_PASSED): (S.CONFIRMING, START_RUN),
    **{(S.LINGERING, e): (S.COLLECTING, COLLECT) for e in _EXITS},  # start goes with end
    **{(S.LINGERING, e): (S.SETTLING, START_RUN) for e in _STOPS},  # start first, alone
    (S.CONFIRMING, In.START_ACCEPTED): (S.RUNNING, None),
    (S.CONFIRMING, In.START_REFUSED): (S.REFUSED, None),
    **{(S.CONFIRMING, e): (S.SETTLING, None) for e in _ENDINGS},  # the answer is awaited
    **{(S.RUNNING, e): (S.COLLECTING, COLLECT) for e in _ENDINGS},
    **{(S.REFUSED, e): (S.DROPPED, None) for e in (*_ENDINGS, In.STOPPED_REFUSED)},
    (S.SETTLING, In.START_ACCEPTED): (S.COLLECTING, COLLECT),
    (S.SETTLING, In.START_REFUSED): (S.DROPPED, None),
    (S.COLLECTING, In.COLLECTED): (S.DONE, END),
}

# What each ending reports; a start never sent goes with the end (only exits get there).
_END_OF: dict[Input, EndRun] = {
    In.COMPLETED: EndRun("completed"),
    In.FAILED: EndRun("failed"),
    In.STOPPED_CANCELED: EndRun("canceled"),
    In.STOPPED_TIMEOUT: EndRun("timeout"),
    In.STOPPED_SHUTDOWN: EndRun("requeue", stop_first=True),
}
_END_WITH_START_OF: dict[Input, EndRun] = {
    In.COMPLETED: EndRun("completed", with_start=True),
    In.FAILED: EndRun("failed", with_start=True),
}
_STOPPED_BECAUSE: dict[str, Input] = {
    "canceled": In.STOPPED_CANCELED, "timeout": In.STOPPED_TIMEOUT,
    "shutdown": In.STOPPED_SHUTDOWN, "refused": In.STOPPED_REFUSED,
}


def ending(status: str, why: str) -> Input:
    """The input for a command that ended with ``status`` (a ``ProcessOutcome``'s),
    stopped (status "canceled") because of ``why``."""
    if status == "completed":
        return In.COMPLETED
    if status == "failed":
        return In.FAILED
    return _STOPPED_BECAUSE[why]


class RunProtocolError(OpenWeightsError):
    """The agent told a run's report of something its state does not allow (both are
    named): a bug in the agent; report it with this message."""

    code = "agent_protocol"
    hint = "a bug in the agent: report it with the message"


class RunReport:
    """One run's reporting protocol: :meth:`handle` what happened, send what it says."""

    __slots__ = ("ending", "start_sent", "state")

    def __init__(self) -> None:
        self.state = State.ASSIGNED
        self.start_sent = False  # StartRun was asked for
        self.ending: Input | None = None  # how the command ended, once it did

    @property
    def over(self) -> bool:
        """Whether nothing more will be sent for the run."""
        return self.state is S.DONE or self.state is S.DROPPED

    def handle(self, event: Input) -> Request | None:
        """Take ``event``; return the request to send next (None: nothing, or nothing
        before another input). Raises :class:`RunProtocolError` for an event the
        current state does not allow."""
        try:
            self.state, out = TRANSITIONS[self.state, event]
        except KeyError:
            raise RunProtocolError(
                f"a run in state {self.state.name} cannot take {event.name}") from None
        if event in _END_OF:
            self.ending = event
        if out is START_RUN:
            self.start_sent = True
        elif isinstance(out, _EndOfRun):
            assert self.ending is not None  # COLLECTING is reached by endings only
            return (_END_OF if self.start_sent else _END_WITH_START_OF)[self.ending]
        return out
