"""The `ow` command line. Every command: `--json` where it prints data, exit code 0 on
success, 1 on a failed check, 2 on bad usage or an unreachable stack (one clear line).

This module only composes: the commands are module-level functions of their modules,
which share what they need through :mod:`openweights.cli.common`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from openweights.cli import (
    audit,
    costs,
    demo,
    evals_cmd,
    exec_cmd,
    files,
    jobs,
    models_cmd,
    replay,
    tenancy,
    worker_cmd,
    workers,
)
from openweights.cli.common import console, friendly, settings


def _untyped_flags(params: list[Any]) -> list[Any]:
    """Flags take no value, so help shows no type for them (typer's shows `<bool>`)."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


app = typer.Typer(cls=Group, no_args_is_help=True, add_completion=False,
                  help="openweights: run GPU jobs on machines it manages.")


@friendly
def up(runpod_stub: bool = typer.Option(
        False, "--runpod-stub",
        help="Provision on a RunPod stand-in served here (OW_BACKEND=runpod; development)",
)) -> None:
    """Start the whole stack on this machine (embedded NATS and Postgres unless given)."""
    from openweights.cli.up import run_up  # the servers' code, only for this command

    run_up(settings(), console, runpod_stub=runpod_stub)


def _commands(target: typer.Typer, *commands: Callable[..., Any]) -> None:
    for command in commands:
        target.command(cls=Command)(command)


def _group(help: str, commands: dict[str, Callable[..., Any]]) -> typer.Typer:
    group = typer.Typer(cls=Group, help=help, no_args_is_help=True)
    for name, command in commands.items():
        group.command(name, cls=Command)(command)
    return group


# In this order in `ow --help`: commands first, then the groups.
_commands(app, up, demo.demo, replay.replay)
app.add_typer(_group("Complete histories from the event log.", {
    "job": audit.audit_job, "worker": audit.audit_worker}), name="audit")
app.command("ls", cls=Command)(jobs.ls)
_commands(app, jobs.show, jobs.logs, jobs.events, jobs.cancel, jobs.restart, files.fetch,
          workers.workers)
app.command("exec", cls=Command)(exec_cmd.exec_)
app.add_typer(_group("Upload and inspect files.", {"upload": files.upload}), name="files")
app.add_typer(_group("Organizations (operators).", {"create": tenancy.org_create}), name="org")
app.add_typer(_group("API tokens of your organization.", {
    "create": tenancy.token_create, "ls": tenancy.token_ls,
    "revoke": tenancy.token_revoke}), name="token")
app.add_typer(_group("Organization secrets (encrypted at rest).", {
    "set": tenancy.env_set, "import": tenancy.env_import, "ls": tenancy.env_ls,
    "show": tenancy.env_show, "rm": tenancy.env_rm}), name="env")

app.command("worker", cls=Command)(worker_cmd.worker)
app.add_typer(_group("Models your jobs produced.", {"ls": models_cmd.models_ls}),
              name="models")
app.add_typer(_group("Scores of finished evaluations.", {"ls": evals_cmd.evals_ls}),
              name="evals")
app.add_typer(_group("Local Python environments of the worker images.", {
    "build": models_cmd.image_build, "ls": models_cmd.image_ls}), name="image")
_cost = typer.Typer(cls=Group, invoke_without_command=True)
_cost.callback()(costs.cost)
_cost.add_typer(_group("Lifetime spending limits (admins).", {
    "set": costs.limit_set, "clear": costs.limit_clear}), name="limit")
app.add_typer(_cost, name="cost", help="What work cost; `ow cost limit` caps it.")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":
    main()
