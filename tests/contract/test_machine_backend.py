"""One contract for every MachineBackend (``services/provisioner/port.py``).

Each backend runs against a real stack (nats-server, Postgres, the projector and the
api), so that a machine it starts is proven to run by its agent's registration, seen
through the log's live republish. A backend joins with a harness in
``machine_backends.py`` and a param of the ``harness`` fixture below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from openweights.config import Settings
from openweights.hardware import vram_gb
from openweights.services.provisioner.port import MachineStartFailed
from openweights.services.testing.stack import services_thread
from tests.contract.machine_backends import LocalHarness, MachineHarness, RunPodHarness

pytestmark = pytest.mark.anyio

# (backend, clause) -> why that backend does not keep that clause yet, and how it fails.
# Strict: once the backend is fixed the clause passes, fails as XPASS, and its line goes.
KNOWN_GAPS: dict[tuple[str, str], tuple[str, type[BaseException]]] = {}
# How much longer than its grace a backend may take to release an unresponsive machine.
CLOSE_SLACK_S = 5.0
NO_MACHINE_FITS_GB = 100_000


@pytest.fixture
def machine_stack(settings: Settings) -> Iterator[Settings]:
    with services_thread(settings, ("projector", "api")):
        yield settings


@pytest.fixture(params=["local", "runpod"])
async def harness(request: pytest.FixtureRequest, anyio_backend: str,
                  machine_stack: Settings) -> AsyncIterator[MachineHarness]:
    gap = KNOWN_GAPS.get((request.param, request.function.__name__))
    if gap is not None:
        reason, raises = gap
        request.applymarker(pytest.mark.xfail(reason=reason, raises=raises, strict=True))
    if request.param == "local":
        async with LocalHarness.open(machine_stack) as local:
            yield local
    elif request.param == "runpod":
        async with RunPodHarness.open(machine_stack) as runpod:
            yield runpod


def vram_of(hardware: str) -> int:
    return 0 if hardware == "cpu" else vram_gb(hardware)


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    rest = iter(whole)
    return all(item in rest for item in part)


# -- hardware_options ------------------------------------------------------------------
async def test_hardware_options_fit_the_need_and_a_bigger_need_only_removes_some(
        harness: MachineHarness) -> None:
    options = harness.backend.hardware_options
    anything = options(None, None)
    assert anything and len(set(anything)) == len(anything)
    assert options(0, None) == anything
    fitting = options(harness.fitting_vram_gb, None)
    assert fitting and all(vram_of(h) >= harness.fitting_vram_gb for h in fitting)
    # Preference is an order on hardware, not on needs: a bigger need never reorders.
    assert is_subsequence(fitting, anything)


async def test_hardware_options_are_empty_when_nothing_fits(harness: MachineHarness) -> None:
    assert harness.backend.hardware_options(NO_MACHINE_FITS_GB, None) == []
    if harness.foreign_hardware is None:
        pytest.skip(f"{harness.name} can start any hardware of the catalog")
    assert harness.backend.hardware_options(None, [harness.foreign_hardware]) == []


async def test_allowed_hardware_keeps_the_callers_order_of_what_it_can_start(
        harness: MachineHarness) -> None:
    preferred = harness.backend.hardware_options(None, None)[0]
    allowed = [h for h in (harness.foreign_hardware, preferred) if h is not None]
    options = harness.backend.hardware_options(None, allowed)
    assert preferred in options and is_subsequence(options, allowed)
    # The list is the caller's choice: it wins over a VRAM need no option meets.
    assert preferred in harness.backend.hardware_options(NO_MACHINE_FITS_GB, allowed)


# -- start, alive, stop ----------------------------------------------------------------
async def test_start_returns_the_id_of_a_live_machine_running_the_specs_agent(
        harness: MachineHarness) -> None:
    first, second = harness.spec(), harness.spec()
    ids = [await harness.backend.start(first), await harness.backend.start(second)]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == 2
    for machine, spec in zip(ids, (first, second), strict=True):
        registered = await harness.wait_running(machine, spec)
        assert (registered.hardware_type, registered.docker_image) == (
            spec.hardware, spec.docker_image)
        assert await harness.backend.alive(machine)


async def test_stop_is_idempotent_and_a_stopped_machine_goes(harness: MachineHarness) -> None:
    spec = harness.spec()
    machine = await harness.backend.start(spec)
    await harness.wait_running(machine, spec)
    await harness.backend.stop(machine)
    await harness.backend.stop(machine)  # a second stop while it goes
    await harness.wait_gone(machine)
    assert not await harness.backend.alive(machine)
    await harness.backend.stop(machine)  # and once it is gone


async def test_an_unknown_machine_is_not_alive_and_stopping_it_is_fine(
        harness: MachineHarness) -> None:
    assert not await harness.backend.alive(harness.unknown_machine_id)
    await harness.backend.stop(harness.unknown_machine_id)


async def test_a_machine_that_died_is_not_alive_and_stopping_it_is_fine(
        harness: MachineHarness) -> None:
    spec = harness.spec()
    machine = await harness.backend.start(spec)
    await harness.wait_running(machine, spec)
    harness.crash(machine)
    await harness.wait_gone(machine)
    assert not await harness.backend.alive(machine)
    await harness.backend.stop(machine)


async def test_a_restarted_backend_knows_and_stops_the_machines_of_the_old_one(
        harness: MachineHarness) -> None:
    spec = harness.spec()
    machine = await harness.backend.start(spec)
    await harness.wait_running(machine, spec)
    restarted = harness.new_backend()
    assert await restarted.alive(machine)
    await restarted.stop(machine)
    await harness.wait_gone(machine)
    assert not await restarted.alive(machine)
    assert not await harness.backend.alive(machine)


async def test_start_raises_machine_start_failed_when_it_cannot_start(
        harness: MachineHarness) -> None:
    spec = harness.spec()
    harness.make_unstartable(spec)
    with pytest.raises(MachineStartFailed):
        await harness.backend.start(spec)
    # What failed left nothing behind, and the backend still starts the next machine.
    other = harness.spec()
    machine = await harness.backend.start(other)
    await harness.wait_running(machine, other)


async def test_start_raises_machine_start_failed_when_nothing_can_start(
        harness: MachineHarness) -> None:
    harness.break_backend()
    with pytest.raises(MachineStartFailed):
        await harness.backend.start(harness.spec())


# -- close ---------------------------------------------------------------------------------
async def test_close_releases_every_machine_it_started(harness: MachineHarness) -> None:
    specs = [harness.spec(), harness.spec()]
    machines = [await harness.backend.start(spec) for spec in specs]
    for machine, spec in zip(machines, specs, strict=True):
        await harness.wait_running(machine, spec)
    await harness.backend.close()
    after = harness.new_backend()
    for machine in machines:
        await harness.wait_gone(machine)
        assert not await after.alive(machine)


async def test_close_releases_even_a_machine_that_ignores_the_polite_stop(
        harness: MachineHarness) -> None:
    spec = harness.spec()
    machine = await harness.backend.start(spec)
    await harness.wait_running(machine, spec)
    harness.make_unresponsive(machine)
    closed = anyio.Event()

    async def close() -> None:
        await harness.backend.close()
        closed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(close)
        with anyio.move_on_after(harness.stop_grace_s + CLOSE_SLACK_S):
            await closed.wait()
        in_time = closed.is_set()
        if not in_time:
            harness.crash(machine)  # so that the stuck close returns and the test ends
    assert in_time, f"close took over {CLOSE_SLACK_S} s past its grace"
    await harness.wait_gone(machine)
    assert not await harness.backend.alive(machine)
