"""GPU detection, health and reclaim, on canned nvidia-smi output (no GPU needed)."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from openweights.services.agent.gpu import (
    APPS_QUERY,
    GPU_QUERY,
    ComputeApp,
    ForeignGpuHolder,
    GpuReading,
    GpuReclaimTimeout,
    HardwareInfo,
    NvidiaSmiError,
    Smi,
    compute_apps,
    detect_hardware,
    gpu_health_problems,
    parse_compute_apps,
    parse_gpu_query,
    reclaim_gpu,
    run_nvidia_smi,
)

pytestmark = pytest.mark.anyio

ONE_H100 = "NVIDIA H100 80GB HBM3, 81559, 81000, 34, 0\n"
EIGHT_A100 = "".join(f"NVIDIA A100-SXM4-80GB, 81920, {80000 - i}, 30, 1\n" for i in range(8))


def canned(gpus: str, apps: str = "") -> Smi:
    async def smi(args: Sequence[str]) -> str:
        return {tuple(GPU_QUERY): gpus, tuple(APPS_QUERY): apps}[tuple(args)]

    return smi


def fake_binary(tmp_path: Path, script: str, timeout_s: float = 2) -> Smi:
    binary = tmp_path / "nvidia-smi"
    binary.write_text(f"#!/bin/sh\n{script}\n")
    binary.chmod(0o755)
    return functools.partial(run_nvidia_smi, binary=str(binary), timeout_s=timeout_s)


# -- detection ---------------------------------------------------------------------------


def test_parse_one_gpu_with_unknown_fields() -> None:
    assert parse_gpu_query("NVIDIA H200, 143771, 143000, [N/A], [Not Supported]\n") == [
        GpuReading("NVIDIA H200", 143771, 143000, None, None)
    ]


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_gpu_query("Failed to initialize NVML: Driver/library version mismatch")


async def test_one_h100() -> None:
    hw = await detect_hardware(canned(ONE_H100))
    assert hw == HardwareInfo(gpu_count=1, gpu_type="H100S", vram_gb=79, hardware_type="1x H100S")


async def test_eight_a100s() -> None:
    hw = await detect_hardware(canned(EIGHT_A100))
    assert hw == HardwareInfo(gpu_count=8, gpu_type="A100S", vram_gb=640,
                              hardware_type="8x A100S")


async def test_unknown_device_keeps_its_raw_name() -> None:
    hw = await detect_hardware(canned("Quadro Foo 9000, 16384, 16000, 40, 0\n"))
    assert (hw.gpu_type, hw.hardware_type, hw.vram_gb) == (
        "Quadro Foo 9000", "1x Quadro Foo 9000", 16,
    )


async def test_missing_binary_means_a_cpu_machine(tmp_path: Path) -> None:
    smi = functools.partial(run_nvidia_smi, binary=str(tmp_path / "absent"))
    with pytest.raises(NvidiaSmiError):
        await smi(GPU_QUERY)
    assert await detect_hardware(smi) == HardwareInfo.cpu()
    assert HardwareInfo.cpu().hardware_type == "cpu"


async def test_real_subprocess_output_is_parsed(tmp_path: Path) -> None:
    smi = fake_binary(tmp_path, f"printf '{ONE_H100}'")
    assert (await detect_hardware(smi)).hardware_type == "1x H100S"


async def test_failing_or_hanging_binary_means_a_cpu_machine(tmp_path: Path) -> None:
    assert await detect_hardware(fake_binary(tmp_path, "exit 9")) == HardwareInfo.cpu()
    hanging = fake_binary(tmp_path, "exec sleep 30", timeout_s=0.2)
    assert await detect_hardware(hanging) == HardwareInfo.cpu()


def test_fake_gpus() -> None:
    assert HardwareInfo.fake_gpus(2) == HardwareInfo(2, "H100S", 160, "2x H100S")
    assert HardwareInfo.fake_gpus(1, "A6000").hardware_type == "1x A6000"
    assert HardwareInfo.fake_gpus(0) == HardwareInfo.cpu()
    with pytest.raises(ValueError, match="unknown GPU"):
        HardwareInfo.fake_gpus(1, "TPU")


# -- health ------------------------------------------------------------------------------


def test_healthy_gpus_have_no_problems() -> None:
    assert gpu_health_problems(parse_gpu_query(EIGHT_A100)) == []
    assert gpu_health_problems([GpuReading("x", 0, 0, None, None)]) == []


def test_health_problems_name_the_gpu_and_the_threshold() -> None:
    readings = [
        GpuReading("ok", 1000, 900, 40, 10),
        GpuReading("full", 1000, 50, 40, 10),
        GpuReading("hot", 1000, 900, 86, 10),
        GpuReading("busy", 1000, 900, 40, 96),
    ]
    problems = gpu_health_problems(readings)
    assert len(problems) == 3
    assert problems[0].startswith("GPU 1 (full): only 5%")
    assert "GPU 2 (hot): temperature 86" in problems[1]
    assert "GPU 3 (busy): memory utilization 96%" in problems[2]


# -- reclaim -----------------------------------------------------------------------------


def test_parse_compute_apps() -> None:
    assert parse_compute_apps("123, 4096\n456, [N/A]\n\n[Not Found], 1\n") == [
        ComputeApp(123, 4096), ComputeApp(456, None),
    ]


async def test_compute_apps_is_empty_when_nvidia_smi_fails(tmp_path: Path) -> None:
    assert await compute_apps(fake_binary(tmp_path, "exit 1")) == []


def unused_pid() -> int:
    # Above pid_max no process can exist, in this namespace or any other.
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process of ours, standing in for a GPU holder a previous job left behind."""
    with subprocess.Popen(["sleep", "30"]) as process:
        yield process
        process.kill()


async def test_foreign_holder_is_refused_without_killing_anything(
    sleeper: subprocess.Popen[bytes],
) -> None:
    smi = canned(ONE_H100, f"{sleeper.pid}, 100\n{unused_pid()}, 70000\n")
    with pytest.raises(ForeignGpuHolder, match=str(unused_pid())):
        await reclaim_gpu(smi=smi, timeout_s=1, poll_interval_s=0.01)
    assert sleeper.poll() is None


async def test_visible_holder_is_killed_and_memory_waited_for(
    sleeper: subprocess.Popen[bytes],
) -> None:
    polls = []

    async def smi(args: Sequence[str]) -> str:
        if tuple(args) == APPS_QUERY:
            return f"{sleeper.pid}, 70000\n"
        alive = sleeper.poll() is None  # reaps the holder once it is dead
        polls.append(alive)
        return f"NVIDIA H100 80GB HBM3, 81559, {5000 if alive else 81000}, 30, 0\n"

    assert await reclaim_gpu(smi=smi, timeout_s=5, poll_interval_s=0.01) == [sleeper.pid]
    assert sleeper.wait(timeout=5) == -9
    assert polls[-1] is False


async def test_own_pids_are_spared(sleeper: subprocess.Popen[bytes]) -> None:
    smi = canned(ONE_H100, f"{sleeper.pid}, 100\n")
    assert await reclaim_gpu([sleeper.pid], smi=smi, poll_interval_s=0.01) == []
    assert sleeper.poll() is None


async def test_memory_that_stays_taken_times_out() -> None:
    smi = canned("NVIDIA H100 80GB HBM3, 81559, 40000, 30, 0\n")
    with pytest.raises(GpuReclaimTimeout, match="49% free"):
        await reclaim_gpu(smi=smi, timeout_s=0.1, poll_interval_s=0.01)
