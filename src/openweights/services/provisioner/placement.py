"""Where each pending job of an organization will run, and why it waits: pure.

Demand is placed per job, in the scheduler's order (``matching.priority``): a job an
idle worker matches, or one a machine already starting can serve, needs nothing new; a
job no machine here can have waits with that reason and takes nothing from the others
(one 200 GB job never holds back the CPU jobs of its image); every other job needs a
machine of its own, sized for its own need. What the provisioner cannot start of those
(its organization's cap, the operator's, a backoff) waits with that reason.

A reason is data: the provisioner appends it to the job's history when it changes
(``JobWaitReasonChanged``), so ``ow show``, ``ow ls`` and the SDK read it from the
read models and a replay rebuilds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from openweights.domain.job import JobState
from openweights.domain.matching import matches, priority
from openweights.domain.worker import WorkerState

# What a backend can start for a need (``MachineBackend.hardware_options``).
HardwareOptions = Callable[[int | None, list[str] | None], list[str]]
FREE_WORKER = "waiting for a free worker"


def takes_slot(w: WorkerState, busy: set[tuple[str, str]]) -> bool:
    """Whether ``w`` counts against the machine caps: a live machine, or one the
    provisioner has still to release. An unmanaged worker that stopped or was declared
    lost has no machine anyone releases: once it holds no run it takes no slot."""
    if w.status in ("starting", "active"):
        return True
    if w.status == "shutdown":
        return (w.managed and w.backend is not None) or (w.org, w.id) in busy
    return False


@dataclass
class Placement:
    """One organization's pending jobs: those that need a new machine (with the
    hardware that can serve each, preferred first) and the reason each other job waits
    (None: a worker is there or coming)."""

    needs: list[tuple[JobState, list[str]]] = field(default_factory=list)
    waits: dict[str, str | None] = field(default_factory=dict)


def place(pending: list[JobState], ws: list[WorkerState], busy: set[tuple[str, str]],
          options_for: HardwareOptions) -> Placement:
    idle = [w for w in ws if w.status == "active" and (w.org, w.id) not in busy]
    starting = [w for w in ws if w.status == "starting"]
    working = [w for w in ws if w.status == "active" and (w.org, w.id) in busy]
    out = Placement()
    for j in sorted(pending, key=priority):
        match = next((w for w in idle if matches(j, w)), None)
        if match is not None:
            idle.remove(match)
            out.waits[j.id] = None
            continue
        options = options_for(j.spec.requires_vram_gb, j.spec.allowed_hardware)
        coming = next((w for w in starting if w.docker_image == j.spec.docker_image
                       and w.hardware_type in options), None)
        if coming is not None:
            starting.remove(coming)
            out.waits[j.id] = None
            continue
        if options:
            out.needs.append((j, options))
        elif any(matches(j, w) for w in working):
            out.waits[j.id] = f"{FREE_WORKER}: {no_hardware(j, new=True)}"
        else:
            out.waits[j.id] = no_hardware(j)
    return out


def no_hardware(j: JobState, *, new: bool = False) -> str:
    allowed, machine = j.spec.allowed_hardware, "new machine" if new else "machine"
    if allowed:
        return f"none of its allowed hardware ({', '.join(allowed)}) can be started here"
    return f"no {machine} here can have {j.spec.requires_vram_gb or 0} GB of VRAM"


def at_cap(org_cap: int, org_live: int, stack_cap: int) -> str:
    if org_live >= org_cap:
        return (f"the organization is at its machine cap ({org_cap}; an admin raises it "
                "with `ow env set MAX_WORKERS=N`)")
    return f"the stack is at its machine cap ({stack_cap}; the operator's OW_MAX_WORKERS)"


def cooling_down(until: datetime) -> str:
    return (f"hardware cooling down after failed starts (next start after "
            f"{until:%H:%M:%S} UTC)")
