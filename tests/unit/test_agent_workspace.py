"""The agent's working directories: fresh for every job, made ahead, reused only when a
job left its directory exactly as it found it."""

from __future__ import annotations

from pathlib import Path

import pytest

from openweights.services.agent.workspace import Workspace, Workspaces

pytestmark = pytest.mark.anyio


def _fresh(ws: Workspace) -> bool:
    return ([p.name for p in ws.dir.iterdir()] == ["uploads"]
            and not any((ws.dir / "uploads").iterdir()) and ws.log.stat().st_size == 0)


async def test_an_untouched_workspace_is_the_next_one(tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path)
    await spaces.prepare()
    first = await spaces.take()
    assert _fresh(first)
    await spaces.give_back(first)
    assert await spaces.take() == first


async def test_a_used_workspace_is_removed_and_the_next_one_is_fresh(tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path)
    used = await spaces.take()
    (used.dir / "uploads" / "result.txt").write_text("kept as a result")
    (used.dir / "scratch").mkdir()
    used.log.write_bytes(b"a line\n")
    await spaces.give_back(used)
    after = await spaces.take()
    assert after.dir != used.dir and not used.dir.exists()
    assert after.log != used.log and not used.log.exists()
    assert _fresh(after)


async def test_a_job_that_only_printed_keeps_its_directory_out_of_the_next_job(
        tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path)
    used = await spaces.take()
    used.log.write_bytes(b"output\n")  # the agent uploads and removes it; here it stays
    await spaces.give_back(used)
    after = await spaces.take()
    assert _fresh(after) and after.log != used.log
    spaces.discard()
