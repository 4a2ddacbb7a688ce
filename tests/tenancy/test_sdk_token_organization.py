"""``OpenWeights(auth_token=..., organization_id=...)``: the token's organization is the
client's; naming another one fails with an error that names both."""

from __future__ import annotations

import pytest

from openweights import OpenWeights
from openweights.errors import Forbidden
from tests.tenancy.conftest import World


def test_organization_id_of_another_org_is_refused(world: World) -> None:
    ow = OpenWeights(auth_token=world.tokens["a_user"], organization_id="orgB",
                     settings=world.client_settings, retry_for_s=2)
    try:
        with pytest.raises(Forbidden, match="organization 'orgA', not 'orgB'"):
            ow.jobs.list()
        with pytest.raises(Forbidden, match="orgB"):  # and again: never half connected
            ow.organization_id  # noqa: B018
    finally:
        ow.close()


def test_the_tokens_organization(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ORG", "a-team")
    with OpenWeights(auth_token=world.tokens["a_user"], organization_id="orgA",
                     settings=world.client_settings, retry_for_s=2) as ow:
        assert ow.organization_id == "orgA"
        assert ow.org_name in (None, "org orgA")  # named once the api's whoami says it
        assert ow.hf_org == "a-team"  # no HF_ORG secret in orgA
        assert ow.jobs.list() == []
