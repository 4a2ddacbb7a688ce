"""`ow exec "<cmd>"`: run a command on a machine with the current directory mounted, as
the original does (its files uploaded, mounted at the job's directory, the command its
entrypoint). The same command on the same files is the same job, which runs once."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from openweights.cli.common import JSON_OPT, client, console, friendly, out, to_json
from openweights.errors import InvalidRequest
from openweights.sdk.blocking import OpenWeights
from openweights.sdk.custom import DEFAULT_IMAGE

MAX_FILES = 2000
MAX_BYTES = 2 << 30
# Not the project's files: version control, environments and caches stay home.
SKIPPED = frozenset({".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "node_modules",
                     ".mypy_cache", ".pytest_cache", ".ruff_cache"})


@friendly
def exec_(command: str = typer.Argument(..., help="the shell command to run"),
          requires_vram_gb: int = typer.Option(0, min=0, help="GPU memory it needs"),
          allowed_hardware: list[str] | None = typer.Option(
              None, "--allowed-hardware", help="e.g. 1x H100 (repeatable)"),
          docker_image: str = typer.Option(DEFAULT_IMAGE, help="the machine's image"),
          wait: bool = typer.Option(False, "--wait", help="until it ends; exit 0 iff it "
                                    "completed, and print its output"),
          as_json: bool = JSON_OPT) -> None:
    """Run a command on a machine with the current directory mounted."""
    files = project_files(Path.cwd())
    with client() as ow:
        mounted = {rel: ow.files.upload(path, "custom_job_file")["id"]
                   for rel, path in files.items()}
        job = ow.jobs.submit(id_prefix="exec", script=command, docker_image=docker_image,
                             params={"command": command, "mounted_files": mounted},
                             requires_vram_gb=requires_vram_gb,
                             allowed_hardware=allowed_hardware or None)
        if not as_json:
            console.print(f"submitted {job.id} ({job.status}; {len(mounted)} file(s) of "
                          f"{Path.cwd()} mounted)", highlight=False, soft_wrap=True)
        if wait:
            job = job.wait()
            _print_output(ow, job.id)
    if as_json:
        out(to_json(job.model_dump()))
    elif wait:
        console.print(f"{job.id} {job.status}", highlight=False)
    if wait and job.status != "completed":
        raise typer.Exit(1)


def project_files(root: Path) -> dict[str, Path]:
    """Every file under ``root`` by its relative path, without ``SKIPPED`` directories;
    refused beyond ``MAX_FILES`` files or ``MAX_BYTES`` bytes (a directory too big to
    mount by mistake, such as a home directory)."""
    found: dict[str, Path] = {}
    size = 0
    for path in sorted(root.rglob("*")):
        if SKIPPED.intersection(path.relative_to(root).parts) or not path.is_file():
            continue
        found[path.relative_to(root).as_posix()] = path
        size += path.stat().st_size
        if len(found) > MAX_FILES or size > MAX_BYTES:
            raise InvalidRequest(f"{root} holds more than {MAX_FILES} files or "
                                 f"{MAX_BYTES >> 30} GiB: run ow exec in the project's "
                                 "directory")
    return found


def _print_output(ow: OpenWeights, job_id: str) -> None:
    runs = ow.runs.list(job_id=job_id)
    if runs:
        sys.stdout.write(runs[-1].logs())
        sys.stdout.flush()
