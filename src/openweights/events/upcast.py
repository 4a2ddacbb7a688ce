"""The one place where old event versions become current ones.

An upcaster takes the raw dict of a stored event whose tag is no longer current and
returns the dict of the next version (with its new ``event`` tag). :func:`upcast` applies
them until the tag is current. Register one whenever an event's shape changes, and add
a golden fixture for the old version under ``tests/fixtures/events/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# old tag -> function producing the dict of the next version.
UPCASTERS: dict[str, Upcaster] = {}


def register_upcaster(old_tag: str) -> Callable[[Upcaster], Upcaster]:
    def wrap(fn: Upcaster) -> Upcaster:
        if old_tag in UPCASTERS:
            raise ValueError(f"upcaster for {old_tag!r} registered twice")
        UPCASTERS[old_tag] = fn
        return fn

    return wrap


def upcast(raw: dict[str, Any], current_tags: frozenset[str]) -> dict[str, Any]:
    seen: set[str] = set()
    while raw.get("event") not in current_tags:
        tag = raw.get("event")
        fn = UPCASTERS.get(tag) if isinstance(tag, str) else None
        if fn is None or tag in seen:
            raise ValueError(f"unknown event type {tag!r} and no upcaster for it")
        seen.add(tag)  # type: ignore[arg-type]
        raw = fn(dict(raw))
    return raw


# -- the upcasters, oldest first ---------------------------------------------------------
# Version 1 of these two carried the job's spec field by field at the top level; version
# 2 nests them as ``spec`` (one ``JobSpec`` shared by command, events and state).
_SPEC_V1 = ("type", "model", "params", "script", "docker_image", "requires_vram_gb",
            "allowed_hardware", "timeout")


def _nest_spec(raw: dict[str, Any], tag: str) -> dict[str, Any]:
    spec = {name: raw.pop(name) for name in _SPEC_V1 if name in raw}
    return {**raw, "event": tag, "spec": spec}


@register_upcaster("job.submitted/1")
def _submitted_v1(raw: dict[str, Any]) -> dict[str, Any]:
    return _nest_spec(raw, "job.submitted/2")


@register_upcaster("job.reset/1")
def _reset_v1(raw: dict[str, Any]) -> dict[str, Any]:
    return _nest_spec(raw, "job.reset/2")


@register_upcaster("worker.machine_started/1")
def _machine_started_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 2 records the machine's price; an old start cost nothing recorded."""
    return {**raw, "event": "worker.machine_started/2", "price_per_hour": 0.0}
