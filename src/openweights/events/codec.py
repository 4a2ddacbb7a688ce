"""The one codec: a stored message is a JSON array of the events of one decision.

Decoding takes the typed fast path (msgspec validates tags and fields in one pass);
only a message holding an old version falls back to dicts, :func:`upcast`, and
conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import msgspec

from openweights.events.base import Event
from openweights.events.job import JOB_EVENTS
from openweights.events.org import ORG_EVENTS
from openweights.events.run import RUN_EVENTS
from openweights.events.upcast import upcast
from openweights.events.worker import WORKER_EVENTS

ALL_EVENTS: tuple[type[Event], ...] = JOB_EVENTS + RUN_EVENTS + WORKER_EVENTS + ORG_EVENTS
AnyEvent = Union[ALL_EVENTS]  # type: ignore[valid-type]  # noqa: UP007
BY_TAG: dict[str, type[Event]] = {str(cls.__struct_config__.tag): cls for cls in ALL_EVENTS}
CURRENT_TAGS: frozenset[str] = frozenset(BY_TAG)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[list[Any]] = msgspec.json.Decoder(list[AnyEvent])
_one_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyEvent)


class UndecodableEvent(ValueError):
    """A stored message is not a list of known events; fix the writer or add an upcaster."""


def encode(events: Sequence[Event]) -> bytes:
    return _encoder.encode(list(events))


def decode(data: bytes) -> list[Event]:
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError:
        return _decode_upcasting(data)
    except msgspec.DecodeError as exc:
        raise UndecodableEvent(f"not a JSON event list: {exc}") from exc


def decode_one(data: bytes | dict[str, Any]) -> Event:
    """Decode a single event (a golden fixture, or one element of a message)."""
    try:
        if isinstance(data, dict):
            raw = upcast(data, CURRENT_TAGS)
            return msgspec.convert(raw, AnyEvent)
        try:
            return _one_decoder.decode(data)
        except msgspec.ValidationError:
            return decode_one(msgspec.json.decode(data))
    except UndecodableEvent:
        raise
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise UndecodableEvent(str(exc)) from exc


def _decode_upcasting(data: bytes) -> list[Event]:
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise UndecodableEvent(str(exc)) from exc
    if not isinstance(raw, list):
        raise UndecodableEvent("a stored message must be a JSON array of events")
    return [decode_one(item) for item in raw]
