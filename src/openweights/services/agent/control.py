"""Why and when this agent's runs must stop: the scheduler's notices, timeouts, shutdown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Literal

import anyio

from openweights.api.protocol import Assignment, RunNotice

__all__ = ["RunControl", "RunControls", "Why"]

Why = Literal["canceled", "timeout", "shutdown", "refused"]


class RunControl:
    """Why and when a running job must stop: a cancel or an (extendable) timeout the
    scheduler tells of, the assignment's timeout passing, the agent stopping, or the api
    refusing the run's start. The first reason stays. The timeout is a timer on the
    loop, not a task polling the clock."""

    def __init__(self, timeout: datetime | None) -> None:
        self.cancel = anyio.Event()
        self.why: Why = "canceled"
        self._timer: asyncio.TimerHandle | None = None
        self.set_deadline(timeout)

    def set_deadline(self, deadline: datetime | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and not self.cancel.is_set():
            left = (deadline - datetime.now(UTC)).total_seconds()
            self._timer = asyncio.get_running_loop().call_later(max(left, 0.0), self.stop,
                                                                "timeout")

    def stop(self, why: Why) -> None:
        if not self.cancel.is_set():
            self.why = why
            self.cancel.set()
        self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_notice(self, n: RunNotice) -> None:
        if n.kind == "canceled":
            self.stop("timeout" if n.reason == "timeout" else "canceled")
        else:
            self.set_deadline(n.timeout)


class RunControls:
    """The controls of the runs this agent was assigned, fed by the scheduler's notices
    (see ``RunNotice``): the running run's, and which queued runs were canceled before
    they started."""

    def __init__(self) -> None:
        self._running: dict[str, RunControl] = {}
        self._queued: set[str] = set()
        self._canceled: set[str] = set()

    def queued(self, a: Assignment) -> None:
        self._queued.add(a.run_id)

    def open(self, a: Assignment, *, stopping: bool) -> RunControl | None:
        """The control of ``a``, about to run; None if it was canceled while queued (it
        never starts). Close it with :meth:`close` once the run is over."""
        self._queued.discard(a.run_id)
        if a.run_id in self._canceled:
            self._canceled.discard(a.run_id)
            return None
        control = self._running[a.run_id] = RunControl(a.timeout)
        if stopping:
            control.stop("shutdown")
        return control

    def close(self, run_id: str) -> None:
        self._running.pop(run_id).close()

    def on_notice(self, n: RunNotice) -> None:
        if (control := self._running.get(n.run_id)) is not None:
            control.on_notice(n)
        elif n.kind == "canceled" and n.run_id in self._queued:
            self._canceled.add(n.run_id)  # not started yet: it never will be

    def stop_all(self, why: Why) -> None:
        for control in self._running.values():
            control.stop(why)
