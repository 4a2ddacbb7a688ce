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
