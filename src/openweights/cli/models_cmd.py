"""`ow models ls` (the models your jobs produced) and `ow image build|ls` (the local
Python environments of the built-in worker images, built ahead with a progress bar)."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from openweights.cli.common import JSON_OPT, client, console, friendly, out, settings, to_json
from openweights.cli.tables import fit_table
from openweights.workerenv import LOCAL_ENVS, ensure, resolve

# What a build says as it starts each of its steps (openweights.workerenv.build).
_STEPS = ("create the environment", "install ", "uninstall ")


@friendly
def models_ls(job: str | None = typer.Option(None, "--job", help="only this job's"),
              limit: int = typer.Option(100, min=1, max=10_000, help="at most this many"),
              as_json: bool = JSON_OPT) -> None:
    """List models your jobs produced: id, kind, base model, job, step."""
    with client() as ow:
        rows = ow.models.list(limit=limit, job_id=job)
    if as_json:
        out(to_json(rows))
        return
    if not rows:
        console.print("no models yet (a fine-tuning job stores one when it completes)")
        return
    cells = [[m["id"], m["kind"], m["base_model"], m["job_id"],
              "-" if m.get("step") is None else str(m["step"])] for m in rows]
    console.print(fit_table(console, ["id", "kind", "base model", "job", "step"], cells,
                            ids=["id", "job"], droppable=["base model", "step"]))


@friendly
def image_build(image: str = typer.Argument(..., help="a built-in worker image")) -> None:
    """Build the local Python environment of a built-in worker image (once; later uses
    find it)."""
    s = settings()
    env = resolve(image, s)
    if env.kind != "built":
        console.print(env.note or f"{image} is used as it is: {env.python}")
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} steps"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"building {image}", total=len(_STEPS) + 1)

        def echo(line: str) -> None:
            if line.startswith(_STEPS):
                progress.advance(task)
            progress.update(task, description=line[:60])

        ensure(image, s, echo)
        progress.update(task, completed=len(_STEPS) + 1, description=f"built {image}")
    console.print(str(env.python))


@friendly
def image_ls(as_json: bool = JSON_OPT) -> None:
    """List the built-in worker images and where their environments are (or will be)."""
    s = settings()
    rows = [{"image": image, "python": str(env.python), "built": env.ready}
            for image in LOCAL_ENVS for env in [resolve(image, s)]]
    if as_json:
        out(to_json(rows))
        return
    cells = [[str(r["image"]), "yes" if r["built"] else "no", str(r["python"])]
             for r in rows]
    console.print(fit_table(console, ["image", "built", "python"], cells, ids=["image"],
                            droppable=["python"]))
