"""Which of a job's hardware options to try now, what a failed start means, and how a
waiting job says why ("no capacity for 1x H100S since 12:03; trying 1x H200").

Holds the hardware cooldowns and the start pauses (``cooldown``); the provisioner tells
it of each start's outcome and asks it before each start. Pure: times are arguments.
"""

from __future__ import annotations

from datetime import datetime

from openweights.config import Settings
from openweights.services.provisioner.cooldown import HardwareCooldown, StartPauses, parse_ladder
from openweights.services.provisioner.port import MachineStartFailed


class Launcher:
    def __init__(self, settings: Settings) -> None:
        self.cooldown = HardwareCooldown(settings.hardware_failure_threshold,
                                         parse_ladder(settings.hardware_cooldown_ladder_min))
        self.pauses = StartPauses(settings.runpod_spend_pause_s)
        self.trying: dict[tuple[str, str], str] = {}  # (org, job) -> its story while it waits

    def paused(self, org: str, now: datetime) -> str | None:
        return self.pauses.why(org, now)

    def usable(self, options: list[str], now: datetime) -> tuple[list[str], list[str]]:
        """(options not cooling down, in order; why each skipped one is skipped)."""
        ok, skipped = [], []
        for hardware in options:
            if self.cooldown.cooling_until(hardware, now) is None:
                ok.append(hardware)
            else:
                skipped.append(self.cooldown.why(hardware, now) or hardware)
        return ok, skipped

    def failed(self, org: str, hardware: str, exc: MachineStartFailed, at: datetime) -> None:
        if exc.kind == "hardware":
            self.cooldown.failed(hardware, at, exc.message[:200])
        elif exc.kind == "spending_limit":
            self.pauses.spending_limit(at, exc.message[:200])
        elif exc.kind == "credentials":
            self.pauses.key_refused(org, at, exc.message[:200])

    def never_registered(self, hardware: str | None, at: datetime) -> None:
        if hardware is not None:
            self.cooldown.failed(hardware, at, "its machine never registered")

    def worked(self, hardware: str | None) -> None:
        if hardware is not None:
            self.cooldown.succeeded(hardware)

    def story(self, tried: list[str], now: datetime, started: str | None) -> str | None:
        """A waiting job's reason after this pass tried ``tried`` (in order) for it."""
        why = [w for h in tried if h != started and (w := self.cooldown.why(h, now))]
        if started is None:
            return "; ".join(why) or None
        return f"{'; '.join(why)}; trying {started}" if why else None
