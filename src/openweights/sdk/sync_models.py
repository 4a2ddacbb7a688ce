"""``Job`` and ``Run`` of the blocking client: the same fields as ``AsyncJob``/``AsyncRun``;
each method runs its async twin's on the client's loop thread and blocks for it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, PrivateAttr

from openweights.sdk.jobs import AsyncJob
from openweights.sdk.loop import LoopThread, twin
from openweights.sdk.runs import AsyncRun
from openweights.sdk.types import Event, JobFields, RunFields

M = TypeVar("M", bound=BaseModel)
_set = object.__setattr__


def _view(cls: type[M], twin: BaseModel, loop: LoopThread) -> M:
    """A ``cls`` holding ``twin``'s (already validated) fields: what ``model_construct``
    does, without its per-field default handling (a seventh of its cost, on every
    result of the blocking client)."""
    out = cls.__new__(cls)
    _set(out, "__dict__", dict(twin.__dict__))
    _set(out, "__pydantic_fields_set__", set(twin.__pydantic_fields_set__))
    _set(out, "__pydantic_extra__", None)
    _set(out, "__pydantic_private__", {"_twin": twin, "_loop": loop})
    return out


class Job(JobFields):
    """A job of the blocking client; its methods update it in place and return it."""

    _twin: AsyncJob = PrivateAttr()
    _loop: LoopThread = PrivateAttr()

    @classmethod
    def _of(cls, job: AsyncJob, loop: LoopThread) -> Job:
        """The blocking view of ``job``."""
        return _view(cls, job, loop)

    def _do(self, coro: Coroutine[Any, Any, AsyncJob]) -> Job:
        self._take(self._loop.run(coro))
        return self

    @twin(AsyncJob.refresh)
    def refresh(self) -> Job:
        return self._do(self._twin.refresh())

    @twin(AsyncJob.cancel)
    def cancel(self) -> Job:
        return self._do(self._twin.cancel())

    @twin(AsyncJob.restart)
    def restart(self) -> Job:
        return self._do(self._twin.restart())

    @twin(AsyncJob.wait)
    def wait(self, timeout: float | None = None) -> Job:
        return self._do(self._twin.wait(timeout))

    @property
    def runs(self) -> list[Run]:
        """This job's runs, oldest first."""
        return [Run._of(r, self._loop) for r in self._loop.run(self._twin.runs)]

    @property
    def cost(self) -> float:
        """What it cost so far in USD: its runs' shares of their machines' time at their
        price (a running job's grows until it ends)."""
        return self._loop.run(self._twin.cost)

    @twin(AsyncJob.log_tail)
    def log_tail(self, lines: int = 20) -> str:
        return self._loop.run(self._twin.log_tail(lines))

    @twin(AsyncJob.download)
    def download(self, target_dir: str | Path, only_last_run: bool = True) -> list[Path]:
        return self._loop.run(self._twin.download(target_dir, only_last_run))


class Run(RunFields):
    """A run of the blocking client."""

    _twin: AsyncRun = PrivateAttr()
    _loop: LoopThread = PrivateAttr()

    @classmethod
    def _of(cls, run: AsyncRun, loop: LoopThread) -> Run:
        return _view(cls, run, loop)

    @property
    def events(self) -> list[Event]:
        """This run's events, oldest first."""
        return self._loop.run(self._twin.events)

    @twin(AsyncRun.logs)
    def logs(self) -> str:
        return self._loop.run(self._twin.logs())

    @twin(AsyncRun.download)
    def download(self, target_dir: str | Path) -> list[Path]:
        return self._loop.run(self._twin.download(target_dir))
