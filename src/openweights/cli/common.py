"""What every `ow` command shares: the consoles, settings, the error-to-exit-code wrapper
and the client a command talks through. A leaf: it imports no command module."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

import anyio
import nats
import typer
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from openweights.adapters.nats.servers import connect_options
from openweights.config import Settings
from openweights.errors import OpenWeightsError, StackUnavailable, Unavailable
from openweights.sdk.blocking import OpenWeights
from openweights.stack import resolve

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err_console = Console(stderr=True)
JSON_OPT = typer.Option(False, "--json", help="print JSON for scripts")
# How long a command waits for an api service that does not answer (the SDK's default
# of 60 s suits programs riding out a restart, not a person at a prompt).
RETRY_S = 15.0


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
            advice = exc.advice()
            err_console.print(f"[red]error:[/red] {exc}" + (f" ({advice})" if advice else ""),
                              soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


async def _probe(url: str, token: str | None) -> None:
    """Fail fast: the SDK's connection keeps retrying an absent server, a shell should not."""
    seen: list[Exception] = []

    async def note(exc: Exception) -> None:
        seen.append(exc)

    try:
        # nats-py retries a refused server max_reconnect_attempts times even on first connect
        # (and forever when it is 0 or less): one retry, shortly after.
        with anyio.fail_after(10):
            options = connect_options(url)
            if token is not None:  # the token, not the URL's credentials, as the SDK does
                options = {"servers": options["servers"], "token": token}
            nc = await nats.connect(**options, allow_reconnect=False, max_reconnect_attempts=1,
                                    reconnect_time_wait=0.1, connect_timeout=3, error_cb=note)
    except Exception as exc:  # nats-py raises unrelated types for "cannot connect"
        cause = seen[-1] if seen else exc
        if "authorization" in str(cause).lower():
            return  # reachable; the client's own connect says what is wrong with the token
        raise StackUnavailable(f"cannot reach openweights at {url} "
                               f"({type(cause).__name__}: {cause}); is `ow up` running?") from None
    await nc.close()


@contextmanager
def client() -> Iterator[OpenWeights]:
    """A client of the configured stack, checked reachable first; closed afterwards."""
    ow = OpenWeights(settings=resolve(settings()), retry_for_s=RETRY_S)
    try:
        t = ow.transport
        anyio.run(_probe, str(t.settings.nats_url), t.api_key)
        yield ow
    except StackUnavailable:
        raise
    except Unavailable as exc:  # NATS answers, the api service does not
        raise StackUnavailable(f"{exc}; is the api service running?") from None
    finally:
        ow.close()


def out(text: str) -> None:
    typer.echo(text)


def to_json(value: Any, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable_python(value), indent=indent)


def when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def progress(what: str) -> Progress:
    return Progress(TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=err_console, transient=True,
                    disable=not err_console.is_terminal)
