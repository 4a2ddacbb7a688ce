"""The clients' constructor keywords (the original SDK's too), offline: nothing here
connects."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import openweights.sdk.client as client_module
from openweights import AsyncOpenWeights, OpenWeights
from openweights.config import Settings
from openweights.errors import InvalidRequest, NotConnected

TOKEN = "ow_" + "a" * 40


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(nats_url="nats://127.0.0.1:1", home=tmp_path)


@pytest.fixture
def blocking(settings: Settings) -> Iterator[OpenWeights]:
    ow = OpenWeights(auth_token=TOKEN, settings=settings)
    yield ow
    ow.close()


def test_auth_token_is_the_api_key(blocking: OpenWeights, settings: Settings) -> None:
    assert blocking.transport.api_key == TOKEN
    assert AsyncOpenWeights(api_key=TOKEN, auth_token=TOKEN,
                            settings=settings).transport.api_key == TOKEN
    with pytest.raises(InvalidRequest, match="auth_token"):
        AsyncOpenWeights(api_key=TOKEN, auth_token="ow_" + "b" * 40, settings=settings)


def test_the_environment_gives_the_key(settings: Settings,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENWEIGHTS_API_KEY", TOKEN)
    assert AsyncOpenWeights(settings=settings).transport.api_key == TOKEN


def test_use_async_and_deploy_kwargs_are_kept(blocking: OpenWeights,
                                              settings: Settings) -> None:
    assert blocking.use_async is False
    assert blocking.deploy_kwargs == {"max_model_len": 2048}
    aow = AsyncOpenWeights(use_async=True, deploy_kwargs={"max_model_len": 8192},
                           settings=settings)
    assert aow.use_async is True and aow.deploy_kwargs == {"max_model_len": 8192}
    other = AsyncOpenWeights(settings=settings)
    other.deploy_kwargs["max_model_len"] = 1  # each client has its own copy
    assert AsyncOpenWeights(settings=settings).deploy_kwargs == {"max_model_len": 2048}


def test_supabase_keywords_are_ignored_with_one_warning(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "_warned_supabase", False)
    with pytest.warns(UserWarning, match="supabase_url and supabase_key are ignored"):
        ow = OpenWeights(supabase_url="https://x.supabase.co", supabase_key="k",
                         settings=settings)
    ow.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AsyncOpenWeights(supabase_url="https://x.supabase.co", settings=settings)


def test_without_a_token_organization_id_names_the_organization(settings: Settings) -> None:
    assert AsyncOpenWeights(organization_id="acme", settings=settings).transport.org == "acme"
    assert AsyncOpenWeights(settings=settings).transport.org == settings.default_org


def test_the_async_client_knows_its_organization_once_connected(settings: Settings) -> None:
    aow = AsyncOpenWeights(organization_id="acme", settings=settings)
    for name in ("organization_id", "org_name", "hf_org"):
        with pytest.raises(NotConnected, match=r"await aow\.connect\(\)"):
            getattr(aow, name)
