"""The jobs' identity as the agent sees it: :class:`JobIsolation` and what it deals in.

See the package's docstring for the two strategies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from openweights.errors import OpenWeightsError

__all__ = ["IsolationUnavailable", "JobIsolation", "JobRefused", "JobUser"]


class IsolationUnavailable(OpenWeightsError):
    """Jobs cannot be given an identity of their own here (the reason is named)."""

    code = "isolation_unavailable"
    hint = ("run the agent (`ow up`) as root with util-linux's setpriv installed, or set "
            "OW_JOB_ISOLATION=auto to run one organization's jobs without isolation")


class JobRefused(OpenWeightsError):
    """This machine does not run jobs of the job's organization (the reason is named)."""

    code = "job_refused"
    hint = ("run `ow up` as root, so that every run gets its own user, or run this "
            "organization's jobs on a machine (an OW_HOME) of its own")


@dataclass(frozen=True, slots=True)
class JobUser:
    """The identity one run's processes have (:class:`UserPerRun`)."""

    uid: int
    gid: int


class JobIsolation(Protocol):
    """What the agent asks of the machine about its jobs' identity."""

    @property
    def isolated(self) -> bool:
        """Whether jobs are kept from the stack's files and from other runs'."""

    @property
    def why_not(self) -> str:
        """Why they are not ("" when they are)."""

    def jobs_root(self, worker_id: str) -> Path:
        """The directory the worker's job directories go in (made, with its modes)."""

    def new_user(self) -> JobUser | None:
        """The identity of the next run (or warm shell); blocks briefly (a file lock):
        call it where the job directory is made, off the event loop."""

    def give(self, user: JobUser | None, path: Path) -> None:
        """Make ``path`` (a job's directory, a file put in it) the run's own."""

    def prefix(self, user: JobUser | None) -> Sequence[str]:
        """What a job's ``/bin/sh`` is started under, as a command line's first words."""

    async def sweep(self, user: JobUser | None, run_id: str) -> None:
        """Kill whatever the run left running, wherever it went; returns once done."""

    def admit(self, org: str) -> None:
        """Raises :class:`JobRefused` when a job of ``org`` may not run here."""
