"""How a machine keeps its jobs from the stack's files and from each other.

One Protocol (:class:`JobIsolation`), two strategies, chosen once per agent by
:func:`choose` (and shown by `ow up` at start, :func:`describe`):

- :class:`UserPerRun`, where the agent runs as root: every run, and the warm shell made
  for it ahead, gets a fresh unprivileged uid and gid that no account and no other run
  ever has (a machine-wide counter, no passwd entry needed). Its directory is owned by
  that uid, mode 0700, in a root-owned jobs root it can pass but not list; its command
  runs under ``setpriv`` (no supplementary groups, no capabilities, no new privileges: a
  setuid binary gains nothing). At its end every process of that uid is SIGKILLed at
  once (``kill(-1)`` as the uid, atomic against forks), so what left the process group
  or the session (``setsid``) dies with it. The stack's files (``OW_HOME``: 0700, its
  keys 0600) and every other run's are another user's.
- :class:`SharedUser`, where it does not (not root, no ``setpriv``, or
  ``OW_JOB_ISOLATION=none``): jobs run as the agent's own user and could read whatever
  it can, so jobs of one organization only run here: the first to run one claims the
  stack (a file under ``OW_HOME``), and a job of another fails, saying why. The agent
  adopts what its jobs orphan (a subreaper), so their leftovers still die at the end.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from openweights.config import Settings
from openweights.isolation.base import IsolationUnavailable, JobIsolation, JobRefused, JobUser
from openweights.isolation.per_run import STATE_DIR, UidRange, UserPerRun
from openweights.isolation.shared import SharedUser, become_subreaper

__all__ = ["MODES", "STATE_DIR", "IsolationUnavailable", "JobIsolation", "JobRefused",
           "JobUser", "SharedUser", "UidRange", "UserPerRun", "become_subreaper", "choose",
           "describe", "harden_home"]

MODES = ("auto", "user", "none")  # OW_JOB_ISOLATION


def choose(settings: Settings, *, euid: int | None = None) -> JobIsolation:
    """The strategy ``settings.job_isolation`` asks for on this machine: ``auto`` (a user
    per run where possible and that user can run the agent's Python, else one
    organization), ``user`` (a user per run, or raise :class:`IsolationUnavailable`),
    ``none`` (one organization)."""
    mode = settings.job_isolation
    if mode not in MODES:
        raise IsolationUnavailable(f"OW_JOB_ISOLATION={mode!r} is none of {', '.join(MODES)}")
    if mode == "none":
        return SharedUser(settings.home, "OW_JOB_ISOLATION=none")
    euid = os.geteuid() if euid is None else euid
    try:
        if euid != 0:
            raise IsolationUnavailable(f"the agent runs as uid {euid}, not as root; run `ow "
                                       "up` as root to give every run a user of its own")
        return UserPerRun.on_this_machine(
            settings, python=sys.executable if mode == "auto" else None)
    except IsolationUnavailable as exc:
        if mode == "user":
            raise IsolationUnavailable(f"OW_JOB_ISOLATION=user, but {exc}") from None
        return SharedUser(settings.home, str(exc))


def describe(isolation: JobIsolation) -> str:
    """One line for `ow up` to show at start."""
    if isolation.isolated:
        return ("jobs are isolated: each run is a fresh unprivileged user that cannot read "
                "this stack's files or other runs', and all it started dies with it")
    return (f"jobs are NOT isolated: a job runs as this stack's user and could read its "
            "credentials, so the jobs of one organization only will run here (the first to "
            f"run one). Why: {isolation.why_not}")


def harden_home(home: Path) -> None:
    """``OW_HOME`` readable by its owner only (keys, tokens, the servers' data, logs).
    A group given to it may pass it, not list it: as root, the embedded Postgres runs as
    its own user, whose group it is given (EmbeddedPostgres.private)."""
    home.mkdir(parents=True, exist_ok=True)
    st = home.stat()
    if st.st_uid == os.geteuid():
        home.chmod(st.st_mode & (0o700 if st.st_gid == os.getegid() else 0o710))
