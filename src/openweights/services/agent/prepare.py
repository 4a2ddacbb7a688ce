"""Getting a run ready to start: may it run here, can its environment be passed, are
its mounted files in place (in its directory, as its user's).

Each of these can fail because of what the job holds: a mount target no file can be
downloaded to, a file id that names nothing, an environment no process can be given,
an organization this machine does not run (see ``openweights.isolation``). The answer
is then the reason, which fails that run; nothing a job holds stops the agent. Jobs
submitted through the api are checked there already (``domain.mounts``, secret sizes);
this is what makes the agent safe from the rest (jobs from before those checks, a file
removed since, a rule added later).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from openweights.api.protocol import Assignment
from openweights.domain.mounts import mount_targets
from openweights.errors import OpenWeightsError
from openweights.isolation import JobIsolation
from openweights.services.agent.api import AgentApi
from openweights.services.agent.job_io import check_env
from openweights.services.agent.output import OnLine, call_back
from openweights.services.agent.process import Sweep
from openweights.services.agent.workspace import Workspace

__all__ = ["JobPreparationFailed", "note", "prepare_run", "sweeper", "tell"]

log = structlog.get_logger("agent")


class JobPreparationFailed(OpenWeightsError):
    """A run could not be made ready (the reason is named); the run failed with it."""

    code = "job_preparation_failed"
    hint = "fix what the message names (the job's params, its files, the org's secrets)"


async def prepare_run(api: AgentApi, isolation: JobIsolation, a: Assignment, ws: Workspace,
                      env: Mapping[str, str]) -> str | None:
    """Make run ``a`` ready in ``ws`` with ``env``; None once it is, else why it cannot
    start (the run fails with that). Never raises but for cancellation."""
    try:
        isolation.admit(a.org)
        check_env(env)
        await _mount(api, isolation, a.params.get("mounted_files"), ws)
    except OpenWeightsError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:  # a name the file system refuses, a full disk...
        return f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # an agent bug a job found: that run fails, the agent goes on
        log.exception("agent.preparation_bug", job=a.job_id, run=a.run_id)
        return f"the agent could not prepare it ({type(exc).__name__}: {exc}): report this"
    return None


async def _mount(api: AgentApi, isolation: JobIsolation, mounted: Any, ws: Workspace) -> None:
    """Download each mounted file to its target, as the run's own."""
    if not mounted:
        return
    for parts, file_id in mount_targets(mounted).items():
        for made in _make_parents(ws.dir, parts[:-1]):
            isolation.give(ws.user, made)
        dest = ws.dir.joinpath(*parts)
        try:
            await api.download(file_id, dest)
        except OpenWeightsError as exc:
            raise JobPreparationFailed(
                f"mounted file {file_id!r} (for {'/'.join(parts)!r}) could not be "
                f"downloaded: {exc}") from exc
        isolation.give(ws.user, dest)


def _make_parents(root: Path, parts: tuple[str, ...]) -> list[Path]:
    """The directories made for ``root/parts...``, outermost first."""
    made, at = [], root
    for part in parts:
        at = at / part
        if not at.is_dir():
            at.mkdir()
            made.append(at)
    return made


async def tell(log_path: Path, on_line: OnLine, why: str) -> None:
    """Put why a run did not start in its log, as its output would be: its log file
    says it, and so do the live log lines."""
    await note(log_path, on_line, f"the job could not start: {why}")


async def note(log_path: Path, on_line: OnLine, what: str) -> None:
    """Put ``what`` (the agent's, not the job's) in the run's log and live lines."""
    line = f"openweights: {what}".encode(errors="replace")
    try:
        with log_path.open("ab") as f:
            f.write(line + b"\n")
    except OSError as exc:  # a full disk, say: the run's error says it all the same
        log.warning("agent.log_write_failed", error=str(exc))
    await call_back(on_line, line)


def sweeper(isolation: JobIsolation, ws: Workspace, run_id: str) -> Sweep:
    """The run's sweep (see ``JobIsolation.sweep``): a failure is logged, not raised,
    since the run's end must still be reported."""
    async def sweep() -> None:
        try:
            await isolation.sweep(ws.user, run_id)
        except OSError as exc:
            log.error("agent.sweep_failed", run=run_id, error=str(exc))
    return sweep
