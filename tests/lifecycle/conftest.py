from __future__ import annotations

from collections.abc import Iterator

import pytest

from openweights import OpenWeights
from openweights.config import Settings
from openweights.testing.stack import ALL_SERVICES, services_thread


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    """Short lifecycle intervals so that failures are noticed within a test's time."""
    return settings.model_copy(update={
        "heartbeat_s": 0.5, "worker_lost_s": 4.0, "worker_lost_starting_s": 20.0,
        "run_start_timeout_s": 20.0, "scheduler_check_s": 0.5, "provisioner_check_s": 0.5,
        "cancel_grace_s": 2.0})


@pytest.fixture
def full_stack(fast_settings: Settings) -> Iterator[Settings]:
    with services_thread(fast_settings, ALL_SERVICES):
        yield fast_settings


@pytest.fixture
def ow(full_stack: Settings) -> Iterator[OpenWeights]:
    client = OpenWeights(settings=full_stack, retry_for_s=10)
    yield client
    client.close()
