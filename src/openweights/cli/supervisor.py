"""`ow up`'s supervisor: whatever part of the stack dies (nats-server, Postgres, a
service) is started again, after a delay that grows while it keeps dying.

The supervisor only decides when; each part says whether it is alive and how to start
it. A part that died is said once on the terminal and logged with structlog; so is its
restart, or why the restart failed and when it is tried next.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from openweights.backoff import Backoff
from openweights.errors import OpenWeightsError

log = structlog.get_logger("up")

# How often a part that is not our child process (Postgres) is looked at, at most.
CHECK_S = 1.0
# What a failed start raises: the server is not back yet, its port is taken, ...
START_ERRORS: tuple[type[Exception], ...] = (OpenWeightsError, OSError,
                                              subprocess.SubprocessError)


@dataclass
class Part:
    """One thing `ow up` keeps running.

    ``start`` raises one of :data:`START_ERRORS` when it cannot start yet; ``exit_status``
    says how it ended ("killed by SIGKILL") and ``where`` where it runs now ("pid 12,
    port 4222"), for the person reading the terminal.
    """

    name: str
    alive: Callable[[], bool]
    start: Callable[[], object]
    exit_status: Callable[[], str] = lambda: "exited"
    where: Callable[[], str] = lambda: ""
    backoff: Backoff = field(default_factory=Backoff)
    up_since: float = 0.0
    restart_at: float | None = None  # set while it is down and waits for its restart
    restarts: int = 0


class Supervisor:
    def __init__(self, parts: list[Part], say: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.parts, self.say, self.clock = parts, say, clock
        now = clock()
        for part in parts:
            part.up_since = now

    def check(self) -> float:
        """Notice the parts that died and start those whose delay is over, in order
        (servers before services); return the seconds until the next look is due."""
        for part in self.parts:
            now = self.clock()
            if part.restart_at is None:
                if not part.alive():
                    self._exited(part, now)
            elif now >= part.restart_at:
                self._restart(part)
        now = self.clock()
        due = [part.restart_at - now for part in self.parts if part.restart_at is not None]
        return max(0.0, min([CHECK_S, *due]))

    def _exited(self, part: Part, now: float) -> None:
        delay = part.backoff.delay(now - part.up_since)
        part.restart_at = now + delay
        how = part.exit_status()
        log.warning("stack.part_exited", part=part.name, how=how, restarts=part.restarts,
                    restart_in_s=delay)
        self.say(f"{part.name} {how} after {now - part.up_since:.0f}s; "
                 f"restarting it in {delay:.1f}s")

    def _restart(self, part: Part) -> None:
        try:
            part.start()
        except START_ERRORS as exc:
            delay = part.backoff.delay(0.0)
            part.restart_at = self.clock() + delay
            log.warning("stack.restart_failed", part=part.name, error=str(exc),
                        retry_in_s=delay)
            self.say(f"{part.name} did not start: {exc}; trying again in {delay:.1f}s")
            return
        part.restart_at, part.up_since = None, self.clock()
        part.restarts += 1
        where = part.where()
        log.info("stack.part_restarted", part=part.name, restarts=part.restarts, where=where)
        self.say(f"{part.name} restarted ({where})" if where else f"{part.name} restarted")
