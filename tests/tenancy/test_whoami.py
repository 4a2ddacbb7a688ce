"""``whoami``: a token's organization, its name and its ``HF_ORG`` secret, as the SDK shows
them (``ow.organization_id``, ``ow.org_name``, ``ow.hf_org``), to any member of it."""

from __future__ import annotations

import pytest

from openweights import OpenWeights
from tests.tenancy.conftest import World


def test_hf_org_is_the_organizations_secret_else_the_environment(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_USER", "someone")
    monkeypatch.delenv("HF_ORG", raising=False)
    with OpenWeights(auth_token=world.tokens["a_user"], settings=world.client_settings,
                     retry_for_s=2) as before:
        assert (before.organization_id, before.org_name) == ("orgA", "org orgA")
        assert before.hf_org == "someone"  # no secret: $HF_ORG, else $HF_USER
    world.ow("a_admin").secrets.set(HF_ORG="alpha-lab")
    with OpenWeights(auth_token=world.tokens["a_user"], settings=world.client_settings,
                     retry_for_s=2) as after:  # a user token: it cannot read secrets
        assert after.hf_org == "alpha-lab"
    with OpenWeights(auth_token=world.tokens["b_admin"], settings=world.client_settings,
                     retry_for_s=2) as other:  # another organization's is never given
        assert (other.organization_id, other.org_name, other.hf_org) == (
            "orgB", "org orgB", "someone")
