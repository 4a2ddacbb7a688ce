"""The client's organization on a stack without auth: ``organization_id`` selects it,
and ``organization_id``/``org_name``/``hf_org`` are known once connected."""

from __future__ import annotations

import pytest

from openweights import AsyncOpenWeights, OpenWeights
from openweights.config import Settings
from openweights.errors import NotConnected, NotFound


def test_blocking_client_connects_to_say_its_organization(
        stack: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ORG", raising=False)
    monkeypatch.delenv("HF_USER", raising=False)
    with OpenWeights(settings=stack, retry_for_s=5) as ow:
        assert ow.organization_id == stack.default_org
        assert ow.org_name is None  # the service names organizations to tokens only
        assert ow.hf_org is None
        monkeypatch.setenv("HF_USER", "me")
        assert ow.hf_org == "me"
        monkeypatch.setenv("HF_ORG", "my-team")
        assert ow.hf_org == "my-team"  # the organization's before the user's


@pytest.mark.anyio
async def test_async_client_says_its_organization_once_connected(stack: Settings) -> None:
    async with AsyncOpenWeights(organization_id="acme", settings=stack, retry_for_s=5) as aow:
        with pytest.raises(NotConnected):
            aow.organization_id  # noqa: B018
        await aow.connect()
        assert aow.organization_id == "acme"


def test_organization_id_selects_the_organization_without_a_token(stack: Settings) -> None:
    with (OpenWeights(organization_id="acme", settings=stack, retry_for_s=5) as acme,
          OpenWeights(settings=stack, retry_for_s=5) as default):
        job = acme.jobs.submit(id_prefix="orgjob", script="echo", docker_image="img")
        assert job.organization_id == "acme"
        assert acme.jobs.retrieve(job.id).id == job.id
        with pytest.raises(NotFound):
            default.jobs.retrieve(job.id)
