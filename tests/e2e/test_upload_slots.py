"""Uploads a client began and never ended: an organization holds at most
``upload_slots_per_org`` open at a time on an api instance, and one that stays idle is
dropped with its spooled bytes."""

from __future__ import annotations

from typing import Any

import pytest

from openweights import OpenWeights
from openweights.api import protocol
from openweights.config import Settings
from openweights.errors import InvalidRequest, NotFound
from openweights.services.api.uploads import Slots
from openweights.services.testing.stack import services_thread


def _begin(ow: OpenWeights) -> dict[str, Any]:
    begun: dict[str, Any] = ow.call(ow.transport.call(
        "files.upload.begin", filename="train.jsonl", purpose="conversations"))
    return begun


def _abort(ow: OpenWeights, begun: dict[str, Any]) -> Any:
    """As the SDK aborts: on the instance that began the upload."""
    t = ow.transport

    async def abort() -> Any:
        body = protocol.encoder.encode(protocol.UploadAbort(upload_id=begun["upload_id"]))
        msg = await t.request(f"{t.subject('files.upload.abort')}.{begun['instance']}", body)
        return t.unwrap(msg.data)

    return ow.call(abort())


def _spooled(settings: Settings) -> list[str]:
    return sorted(p.name for p in (settings.home / "api" / "uploads").iterdir())


def test_an_org_holds_a_bounded_number_of_open_uploads(ow: OpenWeights) -> None:
    per_org = Slots.of(Settings()).per_org
    begun = [_begin(ow) for _ in range(per_org)]
    with pytest.raises(InvalidRequest, match=f"{per_org} uploads in progress"):
        _begin(ow)
    _abort(ow, begun.pop())  # a slot is free again
    begun.append(_begin(ow))


def test_an_idle_upload_is_dropped_with_its_spooled_bytes(settings: Settings) -> None:
    settings = settings.model_copy(update={"upload_idle_s": 0.0})  # idle at once
    with services_thread(settings), OpenWeights(settings=settings, retry_for_s=5) as ow:
        first = _begin(ow)
        assert [n for n in _spooled(settings) if n.startswith(first["upload_id"])]
        second = _begin(ow)  # finds the first idle and drops it
        with pytest.raises(NotFound, match="not found"):
            _abort(ow, first)
        assert not [n for n in _spooled(settings) if n.startswith(first["upload_id"])]
        _abort(ow, second)
