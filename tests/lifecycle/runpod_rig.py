"""The lifecycle lab on the RunPod backend: the real services and agents, with the RunPod
stand-in (``openweights.services.testing.runpod_stub``) in place of RunPod's API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from openweights.events import WorkerMachineStarted
from openweights.services.testing.runpod_stub import Pod, RunPodStub
from tests.lifecycle.conftest import Lab


@dataclass
class RunPodRig:
    lab: Lab
    stub: RunPodStub
    key: str

    def configure(self, **overrides: Any) -> None:
        self.lab.configure(**overrides)

    @property
    def prefix(self) -> str:
        return f"ow-{self.lab.settings.namespace}"

    def pod_of(self, started: WorkerMachineStarted) -> Pod:
        return self.stub.pods[started.machine_id.rpartition("/")[2]]

    def submit(self, script: str, **fields: Any) -> Any:
        return self.lab.submit(script, requires_vram_gb=fields.pop("requires_vram_gb", 0),
                               **fields)


@pytest.fixture
def runpod(lab: Lab, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodRig]:
    stub = RunPodStub(tmp_path / "runpod", grace_s=2.0).start()
    monkeypatch.setenv("RUNPOD_API_BASE_URL", stub.url)  # the SDK reads it at every call
    key = stub.add_key("rp-key")
    lab.configure(backend="runpod", runpod_api_key=key, runpod_poll_s=0.3,
                  runpod_reconcile_s=0.5, runpod_timeout_s=10.0)
    try:
        yield RunPodRig(lab, stub, key)
    finally:
        lab.exits.close()  # the services (and their pods) go before the stand-in
        stub.close()
