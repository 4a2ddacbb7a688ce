"""The model registry is a view of the event log: a replay into a fresh schema lists
the same models the live read models do."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from openweights import OpenWeights
from openweights.adapters.postgres.db import connect, query
from openweights.config import Settings
from openweights.jobs.models import model_event
from openweights.replay import rebuild
from openweights.services.api.models import model_from_row
from openweights.services.testing.stack import services_thread


async def _rebuilt_models(settings: Settings, org: str) -> list[str]:
    await rebuild(settings, "ow_models_replay")
    conn = await connect(settings.database_url)  # type: ignore[arg-type]
    try:
        await conn.execute("SET search_path TO ow_models_replay")
        rows = await conn.fetch(query("api_models_list"), org, None, None, 100, None, None)
        return [model_from_row(r)["id"] for r in rows]
    finally:
        await conn.close()


def test_a_replay_rebuilds_the_model_registry(settings: Settings, tmp_path: Path) -> None:
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(b"w")
    with services_thread(settings):
        ow = OpenWeights(settings=settings, retry_for_s=5)
        try:
            files = {"adapter_model.safetensors": ow.files.upload(weights, "model")["id"]}
            for name in ("me/a", "me/b"):
                ow.run.log(model_event(model_id=name, base_model="org/base", kind="lora",
                                       files=files))
            ow.run.flush()
            live = [m["id"] for m in ow.models.list()]
            org = ow.organization_id
        finally:
            ow.close()
    assert live == ["me/b", "me/a"]
    assert anyio.run(_rebuilt_models, settings, org) == live


@pytest.fixture(autouse=True)
def _no_leftover_schema(settings: Settings) -> object:
    yield None

    async def drop() -> None:
        conn = await connect(settings.database_url)  # type: ignore[arg-type]
        try:
            await conn.execute("DROP SCHEMA IF EXISTS ow_models_replay CASCADE")
        finally:
            await conn.close()

    anyio.run(drop)
