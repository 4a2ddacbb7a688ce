from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from openweights import Jobs, OpenWeights, register

WORKER_SIDE = """
import sys
from openweights import OpenWeights
ow = OpenWeights()
a, b = float(sys.argv[1]), float(sys.argv[2])
print(f"adding {a} and {b}")
ow.run.log({"result": a + b})
"""


class AdditionParams(BaseModel):
    a: float
    b: float


def test_addition_job_runs_on_a_local_agent(ow: OpenWeights, tmp_path: Path,
                                            monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "worker_side.py").write_text(WORKER_SIDE)

    @register("addition")
    class Addition(Jobs):
        mount = {"worker_side.py": "worker_side.py"}
        params = AdditionParams
        requires_vram_gb = 0
        base_image = "python:3.11-slim"

        def get_entrypoint(self, p: AdditionParams) -> str:
            return f"python worker_side.py {p.a} {p.b}"

    job = ow.addition.create(a=5, b=9)
    job.wait(timeout=60)
    assert job.status == "completed", job
    assert job.outputs["result"] == 14.0
    run = job.runs[-1]
    assert "adding 5.0 and 9.0" in run.logs()
