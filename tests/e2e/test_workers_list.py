"""`ow workers` and ``ow.workers.list()`` (issue 21, missing commands): each machine
with its hardware, status, the job it runs now and its age, at 80 columns."""

from __future__ import annotations

from openweights import OpenWeights
from openweights.config import Settings
from tests.e2e.test_cli import FakeAgent
from tests.e2e.test_cli_narrow import cli


def _register(ow: OpenWeights, worker_id: str, **machine: object) -> None:
    ow.call(ow.transport.call("agent.register", worker_id=worker_id, docker_image="img",
                              **machine))


def test_workers_lists_machines_with_their_current_job(stack: Settings,
                                                        ow: OpenWeights) -> None:
    _register(ow, "w1", hardware_type="1x H100", gpu_type="H100", gpu_count=1, vram_gb=80)
    _register(ow, "default-1a2b3c4d", hardware_type="cpu")
    agent = FakeAgent(ow, stack, "customjob-0123456789ab-gpu")
    agent.start()  # on w1
    listed = {w["id"]: w for w in ow.workers.list()}
    assert set(listed) == {"w1", "default-1a2b3c4d"}
    assert listed["w1"]["current_job"] == agent.job_id and listed["w1"]["vram_gb"] == 80
    assert listed["default-1a2b3c4d"]["current_job"] is None
    assert {w["status"] for w in listed.values()} == {"active"}

    table = cli(stack, "workers")
    assert table.exit_code == 0, table.output
    assert max(map(len, table.output.splitlines())) <= 80
    for text in ("w1", "default-1a2b3c4d", agent.job_id, "H100", "active"):
        assert text in table.output, table.output
    assert "workers" in cli(stack, "--help").output


def test_workers_without_machines_says_so(stack: Settings) -> None:
    empty = cli(stack, "workers")
    assert empty.exit_code == 0, empty.output
    assert "no workers running" in empty.output
