"""openweights: GPU jobs behind an OpenAI-like SDK, on an event-sourced service.

Nothing here connects at import time; the SDK names are loaded lazily so that
``import openweights`` stays cheap and works without a GPU or network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time the names load on first use
    from openweights.sdk.blocking import OpenWeights
    from openweights.sdk.client import AsyncOpenWeights
    from openweights.sdk.custom import Jobs, register

__version__ = "0.1.0"

_LAZY = {
    "OpenWeights": "openweights.sdk.blocking",
    "AsyncOpenWeights": "openweights.sdk.client",
    "Jobs": "openweights.sdk.custom",
    "register": "openweights.sdk.custom",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'openweights' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["AsyncOpenWeights", "Jobs", "OpenWeights", "register"]
