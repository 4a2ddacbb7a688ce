"""What GPUs this machine has, whether they are healthy, and freeing them between jobs.

Everything goes through ``nvidia-smi``. Parsing and judging are pure functions over its
CSV output, and the one subprocess call is injected (an :data:`Smi`), so all of it is
tested on canned output without a GPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Collection, Sequence

import anyio
import msgspec

from openweights.errors import OpenWeightsError
from openweights.hardware import GPU_VRAM_GB, short_name_for_device
from openweights.procs import pid_exists

__all__ = [
    "APPS_QUERY", "GPU_QUERY", "ComputeApp", "ForeignGpuHolder", "GpuReading",
    "GpuReclaimError", "GpuReclaimTimeout", "HardwareInfo", "NvidiaSmiError", "Smi",
    "compute_apps", "detect_hardware", "gpu_health_problems", "hardware_from_readings",
    "parse_compute_apps", "parse_gpu_query", "read_gpus", "reclaim_gpu", "run_nvidia_smi",
]

GPU_QUERY = (
    "--query-gpu=name,memory.total,memory.free,temperature.gpu,utilization.memory",
    "--format=csv,noheader,nounits",
)
APPS_QUERY = ("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")

# Health thresholds of the original worker's check (REFERENCE 3.8).
MIN_FREE_MEMORY_FRACTION = 0.10
MAX_TEMPERATURE_C = 85.0
MAX_MEMORY_UTILIZATION_PCT = 95.0

Smi = Callable[[Sequence[str]], Awaitable[str]]
"""Runs ``nvidia-smi`` with the given arguments and returns its stdout; raises
:class:`NvidiaSmiError` when it is absent, fails or hangs."""


class NvidiaSmiError(Exception):
    """``nvidia-smi`` is absent, failed or timed out."""


class GpuReclaimError(OpenWeightsError):
    """The GPUs could not be freed for the next job: this machine should stop taking work."""

    code = "gpu_unavailable"
    hint = "put the job back in the queue and shut this machine down"


class ForeignGpuHolder(GpuReclaimError):
    """A process we cannot kill holds a GPU (another container, or another user's)."""


class GpuReclaimTimeout(GpuReclaimError):
    """GPU memory stayed occupied after the holders were killed."""


class GpuReading(msgspec.Struct, frozen=True):
    """One GPU as ``nvidia-smi`` saw it; None where it reports "[N/A]"."""

    name: str
    memory_total_mib: int
    memory_free_mib: int
    temperature_c: float | None = None
    memory_utilization_pct: float | None = None


class ComputeApp(msgspec.Struct, frozen=True):
    pid: int
    used_memory_mib: int | None = None


class HardwareInfo(msgspec.Struct, frozen=True):
    """What the agent registers with: ``hardware_type`` is the ``"<n>x <SHORT>"`` string
    users put in ``allowed_hardware`` ("cpu" without GPUs); ``gpu_type`` is the short
    catalog name, or the raw device name for a GPU the catalog does not know."""

    gpu_count: int
    gpu_type: str | None
    vram_gb: int
    hardware_type: str

    @classmethod
    def cpu(cls) -> HardwareInfo:
        return cls(gpu_count=0, gpu_type=None, vram_gb=0, hardware_type="cpu")

    @classmethod
    def fake_gpus(cls, count: int, gpu: str = "H100S") -> HardwareInfo:
        """Pretend GPUs (local backend), so hardware matching can be exercised on CPU.

        Raises ValueError for a GPU short name the catalog does not know.
        """
        if gpu not in GPU_VRAM_GB:
            raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(sorted(GPU_VRAM_GB))}")
        if count <= 0:
            return cls.cpu()
        return cls(gpu_count=count, gpu_type=gpu, vram_gb=GPU_VRAM_GB[gpu] * count,
                   hardware_type=f"{count}x {gpu}")


# -- pure: parsing and judging ---------------------------------------------------------


def _number(field: str) -> float | None:
    try:
        return float(field)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse_gpu_query(output: str) -> list[GpuReading]:
    """Parse the output of ``nvidia-smi`` with :data:`GPU_QUERY`, one reading per GPU.

    Raises ValueError for a line that is not the five queried fields.
    """
    readings = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 5:
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        name, total, free, temperature, utilization = fields
        readings.append(GpuReading(
            name=name, memory_total_mib=int(_number(total) or 0),
            memory_free_mib=int(_number(free) or 0), temperature_c=_number(temperature),
            memory_utilization_pct=_number(utilization),
        ))
    return readings


def parse_compute_apps(output: str) -> list[ComputeApp]:
    """Parse ``nvidia-smi`` with :data:`APPS_QUERY`; lines without a numeric pid are skipped."""
    apps = []
    for line in output.splitlines():
        pid, _, memory = (field.strip() for field in line.partition(","))
        if pid.isdigit():
            used = _number(memory)
            apps.append(ComputeApp(int(pid), None if used is None else int(used)))
    return apps


def hardware_from_readings(readings: Sequence[GpuReading]) -> HardwareInfo:
    """Name the machine after its first GPU, as the original worker did.

    VRAM is GPU 0's whole GiB times the count (an "80 GB" H100 reports 79).
    """
    if not readings:
        return HardwareInfo.cpu()
    first, count = readings[0], len(readings)
    gpu_type = short_name_for_device(first.name) or first.name
    return HardwareInfo(gpu_count=count, gpu_type=gpu_type,
                        vram_gb=(first.memory_total_mib // 1024) * count,
                        hardware_type=f"{count}x {gpu_type}")


def gpu_health_problems(readings: Sequence[GpuReading]) -> list[str]:
    """Why these GPUs are unfit for a job (empty when healthy). Unknown values pass."""
    problems = []
    for index, gpu in enumerate(readings):
        label = f"GPU {index} ({gpu.name})"
        if gpu.memory_total_mib > 0:
            free = gpu.memory_free_mib / gpu.memory_total_mib
            if free < MIN_FREE_MEMORY_FRACTION:
                problems.append(f"{label}: only {free:.0%} of memory free")
        if gpu.temperature_c is not None and gpu.temperature_c > MAX_TEMPERATURE_C:
            problems.append(f"{label}: temperature {gpu.temperature_c:g} C > {MAX_TEMPERATURE_C:g}")
        utilization = gpu.memory_utilization_pct
        if utilization is not None and utilization > MAX_MEMORY_UTILIZATION_PCT:
            problems.append(f"{label}: memory utilization {utilization:g}% "
                            f"> {MAX_MEMORY_UTILIZATION_PCT:g}%")
    return problems


def _min_free_fraction(readings: Sequence[GpuReading]) -> float:
    fractions = [g.memory_free_mib / g.memory_total_mib for g in readings if g.memory_total_mib]
    return min(fractions, default=1.0)


# -- I/O: the nvidia-smi call and what uses it -----------------------------------------


async def run_nvidia_smi(
    args: Sequence[str], *, binary: str = "nvidia-smi", timeout_s: float = 10.0
) -> str:
    """The default :data:`Smi`: run ``nvidia-smi`` (killed after ``timeout_s``)."""
    try:
        with anyio.fail_after(timeout_s):
            result = await anyio.run_process([binary, *args], stdin=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError, TimeoutError) as exc:
        raise NvidiaSmiError(f"{binary} {' '.join(args)}: {exc}") from exc
    return result.stdout.decode(errors="replace")


async def read_gpus(smi: Smi = run_nvidia_smi) -> list[GpuReading]:
    """Current readings of every GPU. Raises NvidiaSmiError, ValueError on odd output."""
    return parse_gpu_query(await smi(GPU_QUERY))


async def detect_hardware(smi: Smi = run_nvidia_smi) -> HardwareInfo:
    """This machine's GPUs; a CPU machine when nvidia-smi is absent, fails or is garbled."""
    try:
        return hardware_from_readings(await read_gpus(smi))
    except (NvidiaSmiError, ValueError):
        return HardwareInfo.cpu()


async def compute_apps(smi: Smi = run_nvidia_smi) -> list[ComputeApp]:
    """Processes holding GPU memory; empty when nvidia-smi fails (as the original)."""
    try:
        return parse_compute_apps(await smi(APPS_QUERY))
    except NvidiaSmiError:
        return []


async def reclaim_gpu(
    own_pids: Collection[int] = (), *, min_free_fraction: float = 0.85,
    timeout_s: float = 60.0, poll_interval_s: float = 1.0, smi: Smi = run_nvidia_smi,
) -> list[int]:
    """Free the GPUs of processes an earlier job left behind; return the pids killed.

    The agent itself (and its parent, and ``own_pids``) is never touched. Raises
    :class:`ForeignGpuHolder` without killing anything when a holder is outside our PID
    namespace (nvidia-smi shows host pids of other containers: we can never free that
    memory), and :class:`GpuReclaimTimeout` when, after the kills, some GPU still has
    less than ``min_free_fraction`` of its memory free after ``timeout_s``.
    """
    spared = {os.getpid(), os.getppid(), *own_pids}
    holders = sorted({app.pid for app in await compute_apps(smi)} - spared)
    # Existence, not liveness: a zombie holder is in our namespace (ours to kill), not foreign.
    foreign = [pid for pid in holders if not pid_exists(pid)]
    if foreign:
        raise ForeignGpuHolder(f"GPU held by processes outside this PID namespace: {foreign}")
    for pid in holders:
        _kill(pid)
    await _wait_memory_free(smi, min_free_fraction, timeout_s, poll_interval_s)
    return holders


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # ended meanwhile: nothing left to free
        pass
    except PermissionError as exc:
        raise ForeignGpuHolder(f"GPU held by pid {pid}, which we may not kill") from exc


async def _wait_memory_free(
    smi: Smi, min_free_fraction: float, timeout_s: float, poll_interval_s: float
) -> None:
    last = "no reading yet"
    with anyio.move_on_after(timeout_s):
        while True:
            try:
                fraction = _min_free_fraction(await read_gpus(smi))
            except (NvidiaSmiError, ValueError) as exc:  # transient: keep polling
                last = str(exc)
            else:
                if fraction >= min_free_fraction:
                    return
                last = f"{fraction:.0%} free"
            await anyio.sleep(poll_interval_s)
    raise GpuReclaimTimeout(
        f"GPU memory not freed within {timeout_s:g}s (need {min_free_fraction:.0%} free "
        f"on every GPU; last: {last})"
    )
