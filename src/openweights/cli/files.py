"""`ow fetch` and `ow files upload`: files from a shell, streamed with a progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

import typer

from openweights.cli.common import JSON_OPT, client, console, friendly, out, progress, to_json
from openweights.sdk.blocking import OpenWeights
from openweights.sdk.types import FileInfo


@friendly
def fetch(file_id: str, output: Path | None = typer.Option(
        None, "--output", "-o", dir_okay=False, help="write here; default: stdout")) -> None:
    """Download a file: to `-o PATH`, else its raw bytes to stdout."""
    with client() as ow:
        meta = ow.files.get_by_id(file_id)
        if output is None:
            _copy(ow, file_id, meta, sys.stdout.buffer)
            return
        part = output.with_name(output.name + ".part")
        try:
            with part.open("wb") as sink:
                _copy(ow, file_id, meta, sink)
            part.replace(output)
        finally:
            part.unlink(missing_ok=True)
    console.print(f"wrote {meta['filename']} ({file_id}, {meta['bytes']} bytes) to "
                  f"{output.resolve()}", soft_wrap=True, highlight=False, markup=False)


@friendly
def upload(path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
           purpose: str = typer.Option(..., help="conversations, preference, ..."),
           as_json: bool = JSON_OPT) -> None:
    """Upload a file (datasets are validated first); print its id."""
    with client() as ow, path.open("rb") as f, progress(path.name) as bar:
        task = bar.add_task("upload", total=path.stat().st_size)
        counted = _Counting(f, lambda n: bar.advance(task, n))
        meta = ow.files.create(cast(IO[bytes], counted), purpose)
    out(to_json(meta) if as_json else meta["id"])


def _copy(ow: OpenWeights, file_id: str, meta: FileInfo, sink: IO[bytes]) -> None:
    with progress(meta["filename"]) as bar:
        task = bar.add_task("fetch", total=meta["bytes"])
        for chunk in ow.files.chunks(file_id):
            sink.write(chunk)
            bar.advance(task, len(chunk))
    sink.flush()


class _Counting:
    """A binary file whose reads advance a progress bar (reads run in a worker thread)."""

    def __init__(self, f: IO[bytes], advance: Callable[[int], object]) -> None:
        self.f, self.advance, self.name = f, advance, f.name

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.advance(len(data))
        return data
