"""Golden fixtures: the frozen wire format of every event, and the upcaster path.

``tests/fixtures/events/<tag with '/' as '@'>.json`` holds one hand-written event per
tag. A current tag's fixture must decode and re-encode to the same JSON; a fixture of an
old version must have an upcaster and decode to a current event. A new event without a
fixture, or a changed field, fails here before it reaches a stored log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from openweights.events import Actor, JobCanceled, JobSubmitted, RunEventLogged, decode, decode_one
from openweights.events.codec import ALL_EVENTS, CURRENT_TAGS, UndecodableEvent, encode
from openweights.events.upcast import UPCASTERS, register_upcaster

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"


def fixture_name(tag: str) -> str:
    return tag.replace("/", "@") + ".json"


def tag_of(path: Path) -> str:
    return path.name.removesuffix(".json").replace("@", "/")


ALL_FIXTURES = sorted(FIXTURES.glob("*.json"))
CURRENT_FIXTURES = [p for p in ALL_FIXTURES if tag_of(p) in CURRENT_TAGS]
OLD_FIXTURES = [p for p in ALL_FIXTURES if tag_of(p) not in CURRENT_TAGS]


def test_every_current_event_has_exactly_one_fixture() -> None:
    tags = [cls.__struct_config__.tag for cls in ALL_EVENTS]
    assert len(tags) == len(set(tags)), "two events share a wire tag"
    missing = sorted(fixture_name(t) for t in tags if not (FIXTURES / fixture_name(t)).exists())
    assert missing == [], f"write a golden fixture for each new event: {missing}"
    assert {tag_of(p) for p in CURRENT_FIXTURES} == set(tags)


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: p.name)
def test_fixture_is_named_after_its_tag(path: Path) -> None:
    assert json.loads(path.read_bytes())["event"] == tag_of(path)


def test_every_old_version_fixture_has_an_upcaster() -> None:
    for path in OLD_FIXTURES:  # job.submitted/1 and job.reset/1 (the spec, unnested)
        assert tag_of(path) in UPCASTERS, f"{path.name}: an old version needs its upcaster"
        assert decode_one(path.read_bytes()).tag in CURRENT_TAGS


@pytest.mark.parametrize("path", CURRENT_FIXTURES, ids=lambda p: p.name)
def test_fixture_decodes_and_reencodes_to_the_same_json(path: Path) -> None:
    raw = path.read_bytes()
    event = decode_one(raw)
    assert event.tag == tag_of(path)
    assert isinstance(event.at, datetime) and event.at.tzinfo is not None
    assert isinstance(event.by, Actor)
    assert canonical(msgspec.json.encode(event)) == canonical(raw)
    # The message codec agrees with the single-event one.
    assert decode(encode([event])) == [event]


def test_a_message_of_several_events_decodes_in_order() -> None:
    names = ["job.submitted@2.json", "job.assigned@1.json", "run.started@1.json",
             "run.event_logged@1.json", "job.completed@1.json"]
    message = b"[" + b",".join((FIXTURES / n).read_bytes() for n in names) + b"]"
    events = decode(message)
    assert [e.tag for e in events] == [tag_of(FIXTURES / n) for n in names]
    assert canonical(encode(events)) == canonical(message)


def canonical(data: bytes) -> str:
    return json.dumps(json.loads(data), sort_keys=True, separators=(",", ":"))


# -- upcasting -------------------------------------------------------------------------
# A made-up history: ``job.canceled/0`` had no ``reason`` and called the run ``run``.
OLD_CANCEL = {
    "event": "job.canceled/0",
    "at": "2025-11-20T08:30:00.125000Z",
    "by": {"kind": "client", "id": "tok-4f1c9a2e"},
    "job_id": "ftjob-9c41be2a07d3",
    "run": "run-3e8d5f1a9c02",
}


def _cancel_v0_to_v1(raw: dict[str, Any]) -> dict[str, Any]:
    raw["run_id"] = raw.pop("run")
    return {**raw, "event": "job.canceled/1", "reason": "requested"}


@pytest.fixture
def upcasters() -> Iterator[dict[str, Any]]:
    """The registry, restored after the test whatever it registered."""
    saved = dict(UPCASTERS)
    try:
        yield UPCASTERS
    finally:
        UPCASTERS.clear()
        UPCASTERS.update(saved)


def test_an_old_version_in_a_stored_message_decodes_to_the_current_event(
    upcasters: dict[str, Any],
) -> None:
    register_upcaster("job.canceled/0")(_cancel_v0_to_v1)
    current = (FIXTURES / "job.submitted@1.json").read_bytes()
    message = b"[" + current + b"," + json.dumps(OLD_CANCEL).encode() + b"]"

    submitted, canceled = decode(message)

    assert isinstance(submitted, JobSubmitted)
    assert canceled == JobCanceled(
        at=datetime(2025, 11, 20, 8, 30, 0, 125000, tzinfo=UTC),
        by=Actor("client", "tok-4f1c9a2e"), job_id="ftjob-9c41be2a07d3",
        run_id="run-3e8d5f1a9c02", reason="requested")
    assert decode_one(json.dumps(OLD_CANCEL).encode()) == canceled
    assert decode_one(dict(OLD_CANCEL)) == canceled


def test_upcasters_chain_until_the_tag_is_current(upcasters: dict[str, Any]) -> None:
    register_upcaster("job.cancelled/-1")(lambda raw: {**raw, "event": "job.canceled/0"})
    register_upcaster("job.canceled/0")(_cancel_v0_to_v1)
    older = {**OLD_CANCEL, "event": "job.cancelled/-1"}
    assert decode(json.dumps([older]).encode())[0].tag == "job.canceled/1"


def test_registering_an_upcaster_twice_is_refused(upcasters: dict[str, Any]) -> None:
    register_upcaster("job.canceled/0")(_cancel_v0_to_v1)
    with pytest.raises(ValueError, match="registered twice"):
        register_upcaster("job.canceled/0")(_cancel_v0_to_v1)


def test_an_upcaster_cycle_is_refused(upcasters: dict[str, Any]) -> None:
    register_upcaster("job.canceled/0")(lambda raw: dict(raw))
    with pytest.raises(UndecodableEvent):
        decode(json.dumps([OLD_CANCEL]).encode())


# -- what does not decode ------------------------------------------------------------
def test_an_unknown_tag_without_upcaster_is_undecodable() -> None:
    assert "job.canceled/0" not in UPCASTERS
    with pytest.raises(UndecodableEvent, match=r"job\.canceled/0"):
        decode(json.dumps([OLD_CANCEL]).encode())
    # decode_one reports it as a ValueError (UndecodableEvent is one).
    with pytest.raises(ValueError, match=r"job\.canceled/0"):
        decode_one(json.dumps(OLD_CANCEL).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"event": "job.canceled/1"}',  # one event, not a message
        b'[{"event": "job.canceled/1", "job_id": "j1"}]',  # missing fields
        b'[{"job_id": "j1"}]',  # no tag
    ],
    ids=["not-json", "not-a-list", "missing-fields", "no-tag"],
)
def test_malformed_messages_are_undecodable(data: bytes) -> None:
    with pytest.raises(UndecodableEvent):
        decode(data)


def test_one_bad_event_makes_the_whole_message_undecodable() -> None:
    good = RunEventLogged(at=datetime(2026, 3, 2, tzinfo=UTC), by=Actor("agent", "w1"),
                          job_id="j1", run_id="r1", data={"step": 1})
    message = [*json.loads(encode([good])), {**OLD_CANCEL, "event": "job.vanished/1"}]
    with pytest.raises(UndecodableEvent, match=r"job\.vanished/1"):
        decode(json.dumps(message).encode())
