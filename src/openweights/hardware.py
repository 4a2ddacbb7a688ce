"""The GPU hardware catalog: short names, provider ids, VRAM, prices, and selection.

A hardware string is ``"<count>x <SHORT>"`` (e.g. ``"2x H100S"``) where SHORT is a key
of ``GPUS``. Users name hardware this way in ``allowed_hardware``; workers name
themselves this way from the device name ``nvidia-smi`` reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

import msgspec

from openweights.errors import InvalidRequest

__all__ = [
    "GPUS",
    "GPU_COST_PER_HOUR",
    "GPU_VRAM_GB",
    "UNKNOWN_GPU_COST",
    "USABLE_VRAM_MARGIN_GB",
    "VERIFIED_GPUS",
    "Hardware",
    "UnknownHardware",
    "candidate_hardware",
    "gpu_cost_per_hour",
    "hourly_cost",
    "local_hardware",
    "offers",
    "parse_hardware",
    "short_name_for_device",
    "validate_allowed_hardware",
    "vram_gb",
]

# short name -> (RunPod GPU id, VRAM in GB, $ per GPU-hour). One table so the three
# views below cannot disagree about which GPUs exist.
_CATALOG: dict[str, tuple[str, int, float]] = {
    "A100": ("NVIDIA A100 80GB PCIe", 80, 1.39),
    "A100S": ("NVIDIA A100-SXM4-80GB", 80, 1.49),
    "H100": ("NVIDIA H100 PCIe", 80, 2.39),
    "H100S": ("NVIDIA H100 80GB HBM3", 80, 2.69),
    "H100N": ("NVIDIA H100 NVL", 94, 3.07),
    "H200": ("NVIDIA H200", 141, 3.59),
    "B200": ("NVIDIA B200", 180, 4.99),
    "MI300X": ("AMD Instinct MI300X OAM", 192, 2.49),
    "L40": ("NVIDIA L40", 48, 0.99),
    "L40S": ("NVIDIA L40S", 48, 0.86),
    "L4": ("NVIDIA L4", 24, 0.43),
    "A40": ("NVIDIA A40", 48, 0.44),
    "A30": ("NVIDIA A30", 24, 0.34),
    "V100": ("Tesla V100-SXM2-32GB", 32, 0.39),
    "RTXPRO6000": ("NVIDIA RTX PRO 6000 Blackwell Server Edition", 96, 1.84),
    "6000Ada": ("NVIDIA RTX 6000 Ada Generation", 48, 0.77),
    "5000Ada": ("NVIDIA RTX 5000 Ada Generation", 32, 0.55),
    "4000Ada": ("NVIDIA RTX 4000 Ada Generation", 20, 0.26),
    "2000Ada": ("NVIDIA RTX 2000 Ada Generation", 16, 0.24),
    "A6000": ("NVIDIA RTX A6000", 48, 0.49),
    "A5000": ("NVIDIA RTX A5000", 24, 0.27),
    "A4500": ("NVIDIA RTX A4500", 20, 0.32),
    "A4000": ("NVIDIA RTX A4000", 16, 0.25),
    "RTX3090": ("NVIDIA GeForce RTX 3090", 24, 0.46),
    "RTX3090Ti": ("NVIDIA GeForce RTX 3090 Ti", 24, 0.27),
    "RTX4080": ("NVIDIA GeForce RTX 4080", 16, 0.38),
    "RTX4080S": ("NVIDIA GeForce RTX 4080 SUPER", 16, 0.40),
    "RTX4090": ("NVIDIA GeForce RTX 4090", 24, 0.69),
    "RTX5080": ("NVIDIA GeForce RTX 5080", 16, 0.50),
    "RTX5090": ("NVIDIA GeForce RTX 5090", 32, 0.94),
}

GPUS: Mapping[str, str] = MappingProxyType({k: v[0] for k, v in _CATALOG.items()})
GPU_VRAM_GB: Mapping[str, int] = MappingProxyType({k: v[1] for k, v in _CATALOG.items()})
GPU_COST_PER_HOUR: Mapping[str, float] = MappingProxyType({k: v[2] for k, v in _CATALOG.items()})

# Auto-selectable GPUs: the others start unreliably (L40 pods vanish before the worker
# starts), fail CUDA kernels (B200) or lack CUDA 12.8 (H100 PCIe, L40S, A30).
VERIFIED_GPUS: frozenset[str] = frozenset(
    {"6000Ada", "A100", "A100S", "H100N", "H100S", "H200", "RTX3090", "A40", "A4500"}
)

# Sorting by price puts unknown GPUs last rather than failing.
UNKNOWN_GPU_COST = 999.0
# Headroom the driver and CUDA context take from a GPU before the job can use it.
USABLE_VRAM_MARGIN_GB = 5


def _check_catalog() -> None:
    # Provider ids map back to short names (worker naming), so they must be unique.
    ids = list(GPUS.values())
    if len(set(ids)) != len(ids):
        raise RuntimeError("hardware catalog: duplicate provider GPU ids")
    if missing := VERIFIED_GPUS - GPUS.keys():
        raise RuntimeError(f"hardware catalog: verified GPUs not in GPUS: {sorted(missing)}")


_check_catalog()

_FORM = re.compile(r"([1-9][0-9]*)x (\S+)")
_BY_FOLDED_NAME = {name.casefold(): name for name in GPUS}


class UnknownHardware(InvalidRequest):
    """A hardware string is not ``"<count>x <SHORT>"`` with SHORT a known GPU.

    Use a count of at least 1 and one of the short names in ``GPUS``, e.g. ``"1x H200"``.
    """

    def __init__(self, given: str) -> None:
        self.given = given
        super().__init__(
            f"unknown hardware {given!r}: expected '<count>x <GPU>', e.g. '1x H200' or "
            f"'2x A100'; known GPUs: {', '.join(GPUS)}"
        )


class Hardware(msgspec.Struct, frozen=True):
    """``count`` GPUs of type ``gpu`` (a key of ``GPUS``) in one machine."""

    count: int
    gpu: str

    def __post_init__(self) -> None:
        # Keeps every Hardware value printable as a string parse_hardware accepts.
        if self.count < 1 or self.gpu not in GPUS:
            raise UnknownHardware(f"{self.count}x {self.gpu}")

    def __str__(self) -> str:
        return f"{self.count}x {self.gpu}"


def parse_hardware(text: str) -> Hardware:
    """Parse ``"<count>x <SHORT>"``; surrounding whitespace and the case of SHORT are
    forgiven (``" 2x h100s "`` is ``2x H100S``).

    Raises:
        UnknownHardware: if the text is not of that form or SHORT is not in ``GPUS``.
    """
    match = _FORM.fullmatch(text.strip())
    gpu = _BY_FOLDED_NAME.get(match[2].casefold()) if match else None
    if match is None or gpu is None:
        raise UnknownHardware(text)
    return Hardware(count=int(match[1]), gpu=gpu)


def validate_allowed_hardware(entries: list[str]) -> list[str]:
    """Normalise a job's ``allowed_hardware``, keeping the user's order.

    Raises:
        UnknownHardware: naming the first entry that does not parse.
    """
    return [str(parse_hardware(entry)) for entry in entries]


def _as_hardware(hardware: Hardware | str) -> Hardware:
    return hardware if isinstance(hardware, Hardware) else parse_hardware(hardware)


def vram_gb(hardware: Hardware | str) -> int:
    """Total VRAM in GB across all the GPUs. Raises UnknownHardware for bad strings."""
    hw = _as_hardware(hardware)
    return hw.count * GPU_VRAM_GB[hw.gpu]


def gpu_cost_per_hour(gpu: str) -> float:
    """$ per GPU-hour for a short name; ``UNKNOWN_GPU_COST`` when it is not priced."""
    return GPU_COST_PER_HOUR.get(gpu, UNKNOWN_GPU_COST)


def hourly_cost(hardware: Hardware | str) -> float:
    """$ per hour for the whole machine. Raises UnknownHardware for bad strings."""
    hw = _as_hardware(hardware)
    return hw.count * gpu_cost_per_hour(hw.gpu)


def _fold_device(name: str) -> str:
    return name.strip().lower().removeprefix("nvidia ").strip()


_BY_FOLDED_DEVICE = {_fold_device(device): name for name, device in GPUS.items()}


def short_name_for_device(name: str) -> str | None:
    """The short name for a device name as ``nvidia-smi`` or torch reports it.

    Exact match first; then the longest catalog id contained in the device name (so
    ``"GeForce RTX 4090 D"`` is ``RTX4090``, not a shorter id); then the first catalog
    id that contains the device name. ``None`` when nothing matches.
    """
    folded = _fold_device(name)
    if not folded:
        return None
    if folded in _BY_FOLDED_DEVICE:
        return _BY_FOLDED_DEVICE[folded]
    inside = [device for device in _BY_FOLDED_DEVICE if device in folded]
    if inside:
        return _BY_FOLDED_DEVICE[max(inside, key=len)]
    return next((s for d, s in _BY_FOLDED_DEVICE.items() if folded in d), None)


def candidate_hardware(
    required_vram_gb: int | None, allowed_hardware: list[str] | None
) -> list[str]:
    """Hardware to try for a job, most preferred first.

    With ``allowed_hardware`` (non-empty) that is the user's list, in the user's order.
    Otherwise it is every single-GPU config of a verified GPU whose usable VRAM
    (VRAM minus ``USABLE_VRAM_MARGIN_GB``) covers the need, smallest fitting tier
    first and cheapest first within a tier, so jobs do not squat on big GPUs.
    """
    if allowed_hardware:
        return list(allowed_hardware)
    need = required_vram_gb or 0

    def usable(gpu: str) -> int:
        return GPU_VRAM_GB[gpu] - USABLE_VRAM_MARGIN_GB

    fitting = [gpu for gpu in VERIFIED_GPUS if usable(gpu) >= need]
    fitting.sort(key=lambda gpu: (usable(gpu), gpu_cost_per_hour(gpu), gpu))
    return [str(Hardware(count=1, gpu=gpu)) for gpu in fitting]


def local_hardware(fake_gpus: int, gpu_type: str) -> str:
    """What each machine of the local backend is: ``"<n>x <GPU>"``, or ``"cpu"`` without
    (fake) GPUs (``OW_LOCAL_FAKE_GPUS``, ``OW_LOCAL_FAKE_GPU_TYPE``)."""
    return f"{fake_gpus}x {gpu_type}" if fake_gpus > 0 else "cpu"


def offers(hardware: str, required_vram_gb: int | None,
           allowed_hardware: list[str] | None) -> bool:
    """Whether a machine of ``hardware`` can run a job of these needs: its exact
    hardware is allowed, or (without ``allowed_hardware``) its VRAM covers the need."""
    if allowed_hardware:
        return hardware in allowed_hardware
    return (required_vram_gb or 0) <= (0 if hardware == "cpu" else vram_gb(hardware))
