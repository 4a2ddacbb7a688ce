"""The hardware catalog and the start gates, pure: cheapest verified configuration first,
the user's order when given, RunPod's inventory over the built-in table, and the
cooldown ladder and pauses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openweights.hardware import GPUS
from openweights.services.provisioner.catalog import Catalog
from openweights.services.provisioner.cooldown import (
    HardwareCooldown,
    StartPauses,
    parse_ladder,
)

T0 = datetime(2026, 1, 1, 12, 3, tzinfo=UTC)


def test_without_allowed_hardware_the_cheapest_verified_config_that_fits_comes_first() -> None:
    catalog = Catalog()
    anything = catalog.options(None, None)
    assert anything[:3] == ["1x A4500", "1x A40", "1x RTX3090"]
    prices = [catalog.price_per_hour(h) for h in anything]
    assert prices == sorted(prices)
    assert "1x L40" not in anything and "1x B200" not in anything  # not verified
    # Usable VRAM is 5 GB less per GPU: 70 GB fits 2x A40 (86) before 1x A100 (75).
    assert catalog.options(70, None)[0] == "2x A40"
    assert catalog.options(76, None)[0] == "2x A40"
    assert catalog.options(137, None)[0] == "4x A40"
    assert all(h.split("x ")[0] in {"1", "2", "4", "8"} for h in anything)
    assert catalog.options(10_000, None) == []
    assert catalog.price_per_hour("2x H100S") == pytest.approx(5.38)


def test_allowed_hardware_is_the_users_order_of_what_can_be_rented() -> None:
    catalog = Catalog()
    assert catalog.options(500, ["1x H200", "3x A100", "1x A4500"]) == [
        "1x H200", "3x A100", "1x A4500"]
    assert catalog.options(None, ["16x H200", "1x L40"]) == ["1x L40"]  # 16 > 8 GPUs


def test_runpods_inventory_wins_over_the_table_and_unlisted_gpus_are_not_chosen() -> None:
    inventory = [{"id": g, "displayName": s, "memoryInGb": 50 if s == "A40" else 48}
                 for s, g in GPUS.items() if s != "A4500"]
    catalog = Catalog().refreshed([*inventory, {"id": "Some New GPU", "memoryInGb": 99}])
    assert catalog.options(None, None)[0] == "1x A40"
    assert catalog.gpus["A40"].vram_gb == 50
    assert catalog.options(None, ["1x A4500", "1x A40"]) == ["1x A40"]
    assert Catalog().refreshed([]).options(None, None)[0] == "1x A4500"  # no answer: table


def test_three_failures_in_a_row_cool_a_type_down_on_the_ladder_and_success_resets() -> None:
    cd = HardwareCooldown(3, parse_ladder("1,2,5"))
    for i in range(2):
        cd.failed("1x H100S", T0 + timedelta(seconds=i), "no capacity")
    assert cd.cooling_until("1x H100S", T0) is None
    assert cd.why("1x H100S", T0) == "no capacity for 1x H100S since 12:03"
    cd.failed("1x H100S", T0, "no capacity")
    assert cd.cooling_until("1x H100S", T0) == T0 + timedelta(minutes=1)
    rungs = []
    for wave in range(4):  # each further wave climbs a rung; the last repeats
        at = T0 + timedelta(hours=wave + 1)
        for _ in range(3):
            cd.failed("1x H100S", at, "no capacity")
        rungs.append(cd.cooling_until("1x H100S", at) - at)  # type: ignore[operator]
    assert rungs == [timedelta(minutes=m) for m in (2, 5, 5, 5)]
    cd.succeeded("1x H100S")
    assert cd.why("1x H100S", T0) is None and cd.failing_since("1x H100S") is None
    with pytest.raises(ValueError):
        parse_ladder("1,-2")


def test_a_spending_limit_pauses_everyone_and_a_refused_key_its_org_until_it_changes() -> None:
    p = StartPauses(300)
    p.spending_limit(T0, "exceeded your spend limit")
    assert "spending limit" in (p.why("a", T0 + timedelta(seconds=299)) or "")
    assert p.why("a", T0 + timedelta(seconds=300)) is None
    p.key_refused("a", T0, "401")
    assert "key was refused" in (p.why("a", T0 + timedelta(days=1)) or "")
    assert p.why("b", T0 + timedelta(days=1)) is None
    p.key_changed("a")
    assert p.why("a", T0 + timedelta(days=1)) is None
