"""`ow demo`: the quickstart end to end, starting the local stack if none is running."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import typer

from openweights.cli.common import console, friendly, settings
from openweights.config import Settings
from openweights.errors import StackUnavailable
from openweights.replay import verify
from openweights.stack import operator_settings, read_stack


@contextmanager
def local_stack(settings: Settings) -> Iterator[bool]:
    """Yield True if we started `ow up` for the duration, False if one was running."""
    if settings.nats_url is not None or read_stack(settings) is not None:
        yield False
        return
    proc = subprocess.Popen([sys.executable, "-m", "openweights.cli.main", "up"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, COLUMNS="200"))
    assert proc.stdout is not None
    lines = []
    for raw in proc.stdout:  # `ow up` announces itself once every service is started
        line = raw.decode(errors="replace")
        lines.append(line)
        if "openweights is up" in line:
            break
    else:
        raise StackUnavailable("ow up exited before it was ready:\n" + "".join(lines[-20:]))
    try:
        yield True
    finally:
        proc.terminate()
        proc.wait(60)


@friendly
def demo(out: str = typer.Option("quickstart-outputs", help="where outputs go")) -> None:
    """Run the quickstart: the addition job (5 + 9) and a loss-curve job, live."""
    from openweights.demo.quickstart import main

    s = settings()
    with local_stack(s) as started:
        if started:
            console.print("started a local stack for the demo (stopped at the end)")
        result = main(out)
        console.print(f"[bold]result: {result}[/bold]")
        _, diffs = anyio.run(lambda: verify(operator_settings(s)))
        if diffs:
            for d in diffs:
                console.print(f"[red]replay differs[/red] {d.table} ({d.side}): {d.row}")
            raise typer.Exit(1)
        console.print("[green]ow replay --verify: live read models equal the replay[/green]")
