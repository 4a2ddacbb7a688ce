"""`ow up`'s supervisor decides when a part that died starts again: after a delay that
doubles while it keeps dying (not once a second, issue 13 finding 12), from the start
again after a healthy run, and the same for a start that fails. Time is a number the
test moves; the parts are plain objects that say whether they are alive."""

from __future__ import annotations

from dataclasses import dataclass, field

from openweights.backoff import Backoff
from openweights.cli.supervisor import CHECK_S, Part, Supervisor
from openweights.errors import StackUnavailable


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Thing:
    """Something that runs until the test kills it; its starts may be made to fail."""

    clock: Clock
    running: bool = True
    fail_starts: int = 0
    starts: list[float] = field(default_factory=list)

    def start(self) -> None:
        if self.fail_starts:
            self.fail_starts -= 1
            raise StackUnavailable("port 4222 is taken by another program")
        self.running = True
        self.starts.append(self.clock.now)


def supervised(*names: str) -> tuple[Clock, dict[str, Thing], Supervisor, list[str]]:
    clock, said = Clock(), []
    things = {name: Thing(clock) for name in names}
    parts = [Part(name, lambda t=t: t.running, t.start, lambda: "was killed by SIGKILL",
                  lambda: "pid 7") for name, t in things.items()]
    return clock, things, Supervisor(parts, said.append, clock=clock), said


def crash_and_restart(clock: Clock, thing: Thing, supervisor: Supervisor) -> float:
    """Kill it now and run the supervisor until it is back; the delay it waited."""
    thing.running, died = False, clock.now
    wait = supervisor.check()
    while not thing.running:
        assert wait > 0, "the supervisor must not spin"
        clock.now += wait
        wait = supervisor.check()
    return clock.now - died


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_healthy_run() -> None:
    b = Backoff(first_s=0.5, max_s=4.0, healthy_s=60.0)
    assert [b.delay(1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.delay(ran_for_s=61.0) == 0.5
    b.reset()
    assert b.delay() == 0.5


def test_a_part_that_keeps_dying_is_restarted_ever_later_not_once_a_second() -> None:
    clock, things, supervisor, said = supervised("projector")
    delays = [crash_and_restart(clock, things["projector"], supervisor) for _ in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert said[0] == "projector was killed by SIGKILL after 0s; restarting it in 0.5s"
    assert said[1] == "projector restarted (pid 7)"


def test_a_part_that_ran_a_while_before_it_died_is_restarted_at_once() -> None:
    clock, things, supervisor, _ = supervised("nats-server")
    for _ in range(4):
        crash_and_restart(clock, things["nats-server"], supervisor)
    clock.now += 3600.0  # an hour of work
    assert crash_and_restart(clock, things["nats-server"], supervisor) == 0.5


def test_a_failed_start_is_said_and_tried_again_later() -> None:
    clock, things, supervisor, said = supervised("nats-server")
    things["nats-server"].fail_starts = 2
    assert crash_and_restart(clock, things["nats-server"], supervisor) == 0.5 + 1.0 + 2.0
    assert said[1] == ("nats-server did not start: port 4222 is taken by another "
                       "program; trying again in 1.0s")
    assert said[-1] == "nats-server restarted (pid 7)"


def test_the_next_look_is_due_when_the_next_restart_is() -> None:
    clock, things, supervisor, _ = supervised("postgres", "api")
    assert supervisor.check() == CHECK_S  # all alive: look again in a second
    things["api"].running = False
    assert supervisor.check() == 0.5
    clock.now += 0.5
    assert supervisor.check() == CHECK_S and things["api"].starts == [1000.5]
