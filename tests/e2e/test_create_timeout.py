"""``create(timeout=seconds)`` on any job class (issue 21, missing commands): the job's
deadline (the domain's job timeout) is that many seconds after submission on the
services' clock; once it passes, the scheduler cancels the job with reason "timeout"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from openweights import Jobs, OpenWeights, register
from openweights.config import Settings
from openweights.errors import InvalidRequest
from openweights.services.testing.stack import services_thread
from tests.e2e.test_cli_narrow import cli


class Sleepy(BaseModel):
    n: int


@register("timeout_probe")
class TimeoutProbe(Jobs):
    params = Sleepy
    requires_vram_gb = 0

    def get_entrypoint(self, validated_params: BaseModel) -> str:
        return "sleep 600"


@pytest.fixture
def scheduled(settings: Settings) -> Iterator[Settings]:
    fast = settings.model_copy(update={"scheduler_check_s": 0.2})
    with services_thread(fast, ("projector", "api", "scheduler")):
        yield fast


def test_a_job_past_its_timeout_is_canceled_with_the_reason(scheduled: Settings) -> None:
    with OpenWeights(settings=scheduled, retry_for_s=5) as ow:
        before = datetime.now(UTC)
        job = ow.timeout_probe.create(n=1, timeout=0.5)
        assert job.timeout is not None
        assert before < job.timeout < before + timedelta(seconds=5)
        assert "timeout" not in job.params["validated_params"]
        assert job.wait(timeout=30).status == "canceled"
        with pytest.raises(InvalidRequest, match="timeout"):
            ow.timeout_probe.create(n=2, timeout=-1)
    audit = cli(scheduled, "audit", "job", job.id, "--json")
    assert audit.exit_code == 0, audit.output
    canceled = [e for e in json.loads(audit.output) if e["event"].startswith("job.canceled")]
    assert canceled and canceled[-1]["changes"].get("reason") == "timeout", canceled
