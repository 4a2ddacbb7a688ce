"""``jobs.list`` narrowed by type and by a search of id or model (what the dashboard's
job list filters by), page after page through its cursor."""

from __future__ import annotations

import pytest

from openweights import OpenWeights
from openweights.errors import InvalidRequest


def _ids(ow: OpenWeights, **fields: object) -> list[str]:
    out: list[str] = []
    for page in ow.call(_collect(ow, fields)):
        out += [j["id"] for j in page]
    return out


async def _collect(ow: OpenWeights, fields: dict[str, object]) -> list[list[dict]]:
    return [page async for page in ow.transport.pages("jobs.list", read=True, **fields)]


def test_type_and_search_narrow_the_list(ow: OpenWeights) -> None:
    made = {}
    for i, (kind, model) in enumerate([("script", "Qwen/Qwen3-4B"), ("custom", None),
                                       ("script", "meta/Llama-8B"), ("custom", "qwen-tiny")]):
        made[i] = ow.jobs.submit(id_prefix=f"filt{i}", script=f"echo {i}", docker_image="img",
                                 type=kind, model=model).id
    assert set(_ids(ow, limit=100, type="script")) == {made[0], made[2]}
    assert set(_ids(ow, limit=100, search="QWEN")) == {made[0], made[3]}  # model, any case
    assert _ids(ow, limit=100, search=made[1][-6:]) == [made[1]]  # part of an id
    assert set(_ids(ow, limit=100, type="custom", search="qwen")) == {made[3]}
    assert _ids(ow, limit=100, search="no-such-job") == []
    assert set(_ids(ow, limit=100, status="pending", type="custom")) == {made[1], made[3]}
    with pytest.raises(InvalidRequest, match="at most 200"):
        _ids(ow, limit=10, search="x" * 201)
