"""What a GPU provider offers, as data, and which machine to ask it for: pure.

The built-in table (``openweights.hardware``: short name, provider id, VRAM, $/GPU-hour,
verified) is the fallback; a provider's inventory (RunPod's ``get_gpus``) refreshes it:
the VRAM it reports wins, and a GPU it no longer lists is not chosen automatically. A
configuration is ``count`` GPUs of one type, for each count in ``COUNTS``.

Selection: without ``allowed_hardware``, every verified configuration whose usable VRAM
(reported VRAM minus ``USABLE_VRAM_MARGIN_GB`` per GPU) covers the need, cheapest
first (fewer GPUs, then the name, break ties), so the order is one order on hardware
that a bigger need only thins out. With it, the user's list in the user's order, of
what the provider lists (any count up to ``MAX_COUNT``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from openweights.hardware import (
    GPU_COST_PER_HOUR,
    GPU_VRAM_GB,
    GPUS,
    USABLE_VRAM_MARGIN_GB,
    VERIFIED_GPUS,
    Hardware,
    UnknownHardware,
    parse_hardware,
)

COUNTS = (1, 2, 4, 8)
MAX_COUNT = 8


@dataclass(frozen=True, slots=True)
class GpuType:
    short: str
    provider_id: str
    vram_gb: int
    price_per_gpu_hour: float
    verified: bool
    listed: bool = True  # in the provider's latest inventory


@dataclass(frozen=True, slots=True)
class Config:
    hardware: str  # "2x H100S"
    gpu: GpuType
    count: int

    @property
    def usable_vram_gb(self) -> int:
        return self.count * (self.gpu.vram_gb - USABLE_VRAM_MARGIN_GB)

    @property
    def price_per_hour(self) -> float:
        return self.count * self.gpu.price_per_gpu_hour


def builtin_gpus() -> dict[str, GpuType]:
    return {short: GpuType(short, provider_id, GPU_VRAM_GB[short], GPU_COST_PER_HOUR[short],
                           short in VERIFIED_GPUS)
            for short, provider_id in GPUS.items()}


class Catalog:
    """The GPUs one can rent and their configurations, in price order."""

    def __init__(self, gpus: Mapping[str, GpuType] | None = None) -> None:
        self.gpus = dict(builtin_gpus() if gpus is None else gpus)
        self._index()

    def _index(self) -> None:
        configs = [Config(f"{n}x {g.short}", g, n) for g in self.gpus.values() for n in COUNTS]
        configs.sort(key=lambda c: (c.price_per_hour, c.count, c.gpu.short))
        self.auto = [c for c in configs if c.gpu.verified and c.gpu.listed]
        self.by_provider_id = {g.provider_id: g for g in self.gpus.values()}

    def refreshed(self, inventory: Iterable[Mapping[str, object]]) -> Catalog:
        """A catalog after the provider listed ``inventory`` (rows with ``id`` and
        ``memoryInGb``, as get_gpus returns them). Unknown ids are left out: a GPU
        without a short name cannot be named in ``allowed_hardware`` nor priced."""
        listed: dict[str, int] = {}
        for row in inventory:
            gpu = self.by_provider_id.get(str(row.get("id")))
            memory = row.get("memoryInGb")
            if gpu is not None:
                listed[gpu.short] = memory if isinstance(memory, int) and memory > 0 \
                    else gpu.vram_gb
        if not listed:  # an empty answer is no inventory: keep what we knew
            return self
        return Catalog({s: GpuType(g.short, g.provider_id, listed.get(s, g.vram_gb),
                                   g.price_per_gpu_hour, g.verified, s in listed)
                        for s, g in self.gpus.items()})

    def config(self, hardware: str) -> Config | None:
        """The configuration a hardware string names; None if it is not rentable here."""
        try:
            hw: Hardware = parse_hardware(hardware)
        except UnknownHardware:
            return None
        gpu = self.gpus.get(hw.gpu)
        if gpu is None or not gpu.listed or hw.count > MAX_COUNT:
            return None
        return Config(str(hw), gpu, hw.count)

    def options(self, required_vram_gb: int | None,
                allowed_hardware: list[str] | None) -> list[str]:
        if allowed_hardware:
            return [h for h in allowed_hardware if self.config(h) is not None]
        need = required_vram_gb or 0
        return [c.hardware for c in self.auto if c.usable_vram_gb >= need]

    def price_per_hour(self, hardware: str) -> float:
        """$ per hour of a machine of ``hardware`` (0 for what is not in the catalog)."""
        config = self.config(hardware)
        return 0.0 if config is None else config.price_per_hour
