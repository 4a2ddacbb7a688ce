from __future__ import annotations

from collections.abc import Iterator

import pytest

from openweights import OpenWeights
from openweights.config import Settings
from openweights.services.testing.stack import services_thread


@pytest.fixture
def stack(settings: Settings) -> Iterator[Settings]:
    with services_thread(settings):
        yield settings


@pytest.fixture
def ow(stack: Settings) -> Iterator[OpenWeights]:
    client = OpenWeights(settings=stack, retry_for_s=5)
    yield client
    client.close()
