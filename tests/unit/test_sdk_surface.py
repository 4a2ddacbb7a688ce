"""The blocking client is the async API, blocking: the same names with the same
parameters on both sides, each blocking method only delegating to its async twin."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from openweights import AsyncOpenWeights, Jobs, OpenWeights, register
from openweights.config import Settings
from openweights.sdk.blocking import BoundJobs
from openweights.sdk.custom import REGISTERED
from openweights.sdk.jobs import AsyncJob
from openweights.sdk.runs import AsyncRun
from openweights.sdk.sync_models import Job, Run

# Only the blocking client has these: it runs async code on its loop thread for you.
SYNC_ONLY = {"call", "aio"}
# Blocking methods that do more than one delegating call, and why.
NOT_ONE_CALL = {
    ("CurrentRun", "log"): "buffers on the caller's thread: no hop per event",
    ("OpenWeights", "close"): "also stops the loop thread",
}


@register("surface_probe")
class SurfaceProbe(Jobs):
    def get_entrypoint(self, validated_params: Any) -> str:
        return "true"


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[tuple[AsyncOpenWeights, OpenWeights]]:
    """Both clients, never connected (nothing listens at that address)."""
    settings = Settings(nats_url="nats://127.0.0.1:1", home=tmp_path)
    ow = OpenWeights(settings=settings)
    yield AsyncOpenWeights(settings=settings), ow
    ow.close()


def pairs(aow: AsyncOpenWeights, ow: OpenWeights) -> list[tuple[object, object]]:
    names = ("files", "jobs", "runs", "events", "tokens", "secrets", "workers", "run")
    return [(aow, ow), *((getattr(aow, n), getattr(ow, n)) for n in names),
            (AsyncJob, Job), (AsyncRun, Run)]


def public(obj: object) -> set[str]:
    base = BaseModel if isinstance(obj, type) and issubclass(obj, BaseModel) else object
    return {n for n in dir(obj) if not n.startswith("_") and not hasattr(base, n)
            and n not in REGISTERED}


def method(obj: object, name: str) -> Any:
    cls = obj if isinstance(obj, type) else type(obj)
    found = inspect.getattr_static(cls, name, None)
    return found if inspect.isfunction(found) else None


def is_async_api(fn: Any) -> bool:
    returns = str(inspect.signature(fn).return_annotation)
    return inspect.iscoroutinefunction(fn) or returns.startswith("AsyncIterator")


def params(fn: Any) -> list[tuple[str, Any, object, object]]:
    return [(p.name, p.kind, p.default, p.annotation)
            for p in inspect.signature(fn).parameters.values()]


def test_every_name_has_a_twin(clients: tuple[AsyncOpenWeights, OpenWeights]) -> None:
    for a, s in pairs(*clients):
        assert public(a) == public(s) - SYNC_ONLY, (type(a), type(s))


def test_twins_take_the_same_parameters(clients: tuple[AsyncOpenWeights, OpenWeights]) -> None:
    checked = 0
    for a, s in [*pairs(*clients), (Jobs, BoundJobs)]:
        for name in public(a) & public(s):
            fa, fs = method(a, name), method(s, name)
            if fa is None and fs is None:
                continue  # attributes and properties: compared by name above
            assert fa is not None and fs is not None, (type(a), name)
            assert is_async_api(fa) and not is_async_api(fs), (type(a), name)
            assert params(fa) == params(fs), (type(a), name)
            checked += 1
    assert checked > 40
    assert params(AsyncOpenWeights.__init__) == params(OpenWeights.__init__)


def test_a_registered_job_type_is_on_both_clients(
        clients: tuple[AsyncOpenWeights, OpenWeights]) -> None:
    aow, ow = clients
    assert isinstance(aow.surface_probe, SurfaceProbe)
    assert isinstance(ow.surface_probe, BoundJobs) and ow.surface_probe.jobs is not None
    assert ow.surface_probe is ow.surface_probe
    with pytest.raises(AttributeError, match="@register"):
        ow.not_registered  # noqa: B018
    with pytest.raises(AttributeError, match="@register"):
        aow.not_registered  # noqa: B018


def _body(fn: Any) -> list[ast.stmt]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return list(body)


def test_blocking_methods_only_delegate(clients: tuple[AsyncOpenWeights, OpenWeights]) -> None:
    for a, s in [*pairs(*clients), (Jobs, BoundJobs)]:
        cls = s if isinstance(s, type) else type(s)
        for name in public(a) & public(s):
            fn = method(s, name)
            if fn is None or (cls.__name__, name) in NOT_ONE_CALL:
                continue
            body = _body(fn)
            assert len(body) == 1 and isinstance(body[0], ast.Return), (cls.__name__, name)
            assert fn.__doc__ == method(a, name).__doc__, (cls.__name__, name)
