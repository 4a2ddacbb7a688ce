"""The `ow` command line. Every command: `--json` where it prints data, exit code 0 on
success, 1 on a failed check, 2 on bad usage or an unreachable stack (one clear line)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from openweights.config import Settings
from openweights.errors import OpenWeightsError, StackUnavailable

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="openweights: run GPU jobs on machines it manages.")
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def settings() -> Settings:
    return Settings()


def friendly(fn: F) -> F:
    """Turn our typed errors into one clear line and a script-safe exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StackUnavailable as exc:
            err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(2) from None
        except OpenWeightsError as exc:
            err_console.print(f"[red]error:[/red] {exc} ({exc.hint})", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@friendly
def up() -> None:
    """Start the whole stack on this machine (embedded NATS and Postgres unless given)."""
    from openweights.cli.up import run_up

    run_up(settings(), console)


def _register() -> None:
    from openweights.cli import audit, demo, jobs, replay, tenancy

    demo.register(app)
    replay.register(app)
    audit.register(app)
    jobs.register(app)
    tenancy.register(app)


_register()


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":
    main()
