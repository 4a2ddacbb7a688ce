"""The GPU hardware catalog: parsing, validation, device naming and selection order."""

from __future__ import annotations

import msgspec
import pytest

from openweights.hardware import (
    GPU_COST_PER_HOUR,
    GPU_VRAM_GB,
    GPUS,
    UNKNOWN_GPU_COST,
    VERIFIED_GPUS,
    Hardware,
    UnknownHardware,
    candidate_hardware,
    gpu_cost_per_hour,
    hourly_cost,
    parse_hardware,
    short_name_for_device,
    validate_allowed_hardware,
    vram_gb,
)

# -- catalog ---------------------------------------------------------------------------


def test_catalog_tables_cover_the_same_gpus() -> None:
    assert len(GPUS) >= 30
    assert GPUS.keys() == GPU_VRAM_GB.keys() == GPU_COST_PER_HOUR.keys()
    assert len(set(GPUS.values())) == len(GPUS)
    assert VERIFIED_GPUS.issubset(GPUS)


@pytest.mark.parametrize(
    ("short", "provider_id"),
    [
        ("A100", "NVIDIA A100 80GB PCIe"),
        ("A100S", "NVIDIA A100-SXM4-80GB"),
        ("H100", "NVIDIA H100 PCIe"),
        ("H100N", "NVIDIA H100 NVL"),
        ("H100S", "NVIDIA H100 80GB HBM3"),
        ("H200", "NVIDIA H200"),
        ("B200", "NVIDIA B200"),
        ("6000Ada", "NVIDIA RTX 6000 Ada Generation"),
        ("A4500", "NVIDIA RTX A4500"),
        ("RTX3090", "NVIDIA GeForce RTX 3090"),
        ("MI300X", "AMD Instinct MI300X OAM"),
    ],
)
def test_provider_ids(short: str, provider_id: str) -> None:
    assert GPUS[short] == provider_id


def test_verified_gpus() -> None:
    expected = {"6000Ada", "A100", "A100S", "H100N", "H100S", "H200", "RTX3090", "A40", "A4500"}
    assert expected == VERIFIED_GPUS


@pytest.mark.parametrize(
    ("short", "cost"),
    [
        ("A4500", 0.32),
        ("A40", 0.44),
        ("RTX3090", 0.46),
        ("6000Ada", 0.77),
        ("A100", 1.39),
        ("A100S", 1.49),
        ("H100S", 2.69),
        ("H100N", 3.07),
        ("H200", 3.59),
        ("B200", 4.99),
    ],
)
def test_reference_prices(short: str, cost: float) -> None:
    assert gpu_cost_per_hour(short) == cost


def test_unknown_gpu_costs_999() -> None:
    assert gpu_cost_per_hour("TPUv9") == UNKNOWN_GPU_COST == 999


def test_catalog_is_read_only() -> None:
    with pytest.raises(TypeError):
        GPUS["X"] = "y"  # type: ignore[index]


# -- Hardware and parsing --------------------------------------------------------------------


def test_hardware_prints_as_count_x_name() -> None:
    assert str(Hardware(count=2, gpu="H100S")) == "2x H100S"


def test_hardware_is_frozen_and_hashable() -> None:
    hw = Hardware(count=1, gpu="A100")
    with pytest.raises(AttributeError):
        hw.count = 2  # type: ignore[misc]
    assert {hw, Hardware(1, "A100")} == {hw}


@pytest.mark.parametrize(("count", "gpu"), [(0, "A100"), (-1, "A100"), (1, "NOPE")])
def test_hardware_rejects_impossible_values(count: int, gpu: str) -> None:
    with pytest.raises(UnknownHardware):
        Hardware(count=count, gpu=gpu)


def test_hardware_round_trips_through_msgspec() -> None:
    hw = Hardware(count=4, gpu="H200")
    assert msgspec.json.decode(msgspec.json.encode(hw), type=Hardware) == hw
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"count": 1, "gpu": "NOPE"}', type=Hardware)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1x H200", Hardware(1, "H200")),
        ("8x H100S", Hardware(8, "H100S")),
        ("2x 6000Ada", Hardware(2, "6000Ada")),
        ("12x A100", Hardware(12, "A100")),
        (" 2x h100s \n", Hardware(2, "H100S")),
        ("1x rtx3090", Hardware(1, "RTX3090")),
    ],
)
def test_parse_hardware(text: str, expected: Hardware) -> None:
    assert parse_hardware(text) == expected
    assert parse_hardware(str(expected)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "H200",
        "0x H200",
        "-1x H200",
        "01x H200",
        "x H200",
        "1 H200",
        "1X H200",
        "1xH200",
        "1x  H200",
        "1x NVIDIA H200",
        "1x H300",
        "1x H200 extra",
        "1.5x H200",
        "",
    ],
)
def test_parse_hardware_rejects(text: str) -> None:
    with pytest.raises(UnknownHardware) as caught:
        parse_hardware(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "'<count>x <GPU>'" in message
    assert "H200" in message and "A100" in message
    assert isinstance(caught.value, ValueError)


def test_validate_allowed_hardware_normalises_in_order() -> None:
    entries = ["2x h100s", "1x A100", " 1x H200 "]
    assert validate_allowed_hardware(entries) == ["2x H100S", "1x A100", "1x H200"]
    assert validate_allowed_hardware([]) == []


def test_validate_allowed_hardware_names_the_first_bad_entry() -> None:
    with pytest.raises(UnknownHardware) as caught:
        validate_allowed_hardware(["1x A100", "1x FOO", "BAR"])
    assert caught.value.given == "1x FOO"
    assert "'1x FOO'" in str(caught.value)


@pytest.mark.parametrize(
    ("hardware", "gb"),
    [("1x A100", 80), ("2x H100S", 160), ("4x H200", 564), (Hardware(3, "RTX3090"), 72)],
)
def test_vram_gb(hardware: Hardware | str, gb: int) -> None:
    assert vram_gb(hardware) == gb


def test_vram_gb_rejects_unknown_hardware() -> None:
    with pytest.raises(UnknownHardware):
        vram_gb("1x NOPE")


def test_hourly_cost_is_count_times_gpu_price() -> None:
    assert hourly_cost("2x A100") == pytest.approx(2 * 1.39)
    assert hourly_cost(Hardware(1, "H200")) == 3.59


# -- device naming -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "short"),
    [
        ("NVIDIA H100 80GB HBM3", "H100S"),
        ("NVIDIA A100-SXM4-80GB", "A100S"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA H100 NVL", "H100N"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA RTX 6000 Ada Generation", "6000Ada"),
        ("NVIDIA GeForce RTX 3090", "RTX3090"),
        ("NVIDIA GeForce RTX 3090 Ti", "RTX3090Ti"),
        ("nvidia geforce rtx 4090", "RTX4090"),
        ("  NVIDIA L40S  ", "L40S"),
        ("NVIDIA L4", "L4"),
        ("AMD Instinct MI300X OAM", "MI300X"),
        # Device names longer than any catalog id: the longest id inside wins.
        ("NVIDIA GeForce RTX 4090 D", "RTX4090"),
        ("NVIDIA H200 NVL", "H200"),
        ("NVIDIA RTX A4000 Laptop GPU", "A4000"),
        ("NVIDIA L40S-PCIE-48GB", "L40S"),
        # Device names shorter than a catalog id: the first id containing it.
        ("NVIDIA A100", "A100"),
        ("NVIDIA RTX 6000 Ada", "6000Ada"),
    ],
)
def test_short_name_for_device(device: str, short: str) -> None:
    assert short_name_for_device(device) == short


@pytest.mark.parametrize("device", ["", "NVIDIA ", "NVIDIA A100-SXM4-40GB", "Intel Arc A770"])
def test_short_name_for_unknown_device(device: str) -> None:
    assert short_name_for_device(device) is None


def test_every_catalog_id_names_itself() -> None:
    for short, provider_id in GPUS.items():
        assert short_name_for_device(provider_id) == short


# -- candidate selection ---------------------------------------------------------------------

ALL_VERIFIED_IN_ORDER = [
    "1x A4500",  # 20 GB
    "1x RTX3090",  # 24 GB
    "1x A40",  # 48 GB, cheaper than 6000Ada
    "1x 6000Ada",
    "1x A100",  # 80 GB, cheapest first
    "1x A100S",
    "1x H100S",
    "1x H100N",  # 94 GB
    "1x H200",  # 141 GB
]


@pytest.mark.parametrize("need", [None, 0])
def test_candidates_without_a_need_are_all_verified_gpus(need: int | None) -> None:
    assert candidate_hardware(need, None) == ALL_VERIFIED_IN_ORDER


@pytest.mark.parametrize(
    ("need", "first"),
    [(15, "1x A4500"), (16, "1x RTX3090"), (20, "1x A40"), (43, "1x A40"), (44, "1x A100")],
)
def test_candidates_need_usable_vram_of_vram_minus_5(need: int, first: str) -> None:
    candidates = candidate_hardware(need, None)
    assert candidates[0] == first
    assert candidates == ALL_VERIFIED_IN_ORDER[ALL_VERIFIED_IN_ORDER.index(first) :]


def test_candidates_cheapest_first_within_a_tier() -> None:
    assert candidate_hardware(70, None) == [
        "1x A100",
        "1x A100S",
        "1x H100S",
        "1x H100N",
        "1x H200",
    ]


def test_candidates_are_single_gpu_verified_only() -> None:
    candidates = candidate_hardware(0, None)
    assert all(c.startswith("1x ") for c in candidates)
    assert {parse_hardware(c).gpu for c in candidates} == VERIFIED_GPUS


def test_no_candidates_when_nothing_is_big_enough() -> None:
    assert candidate_hardware(137, None) == []
    assert candidate_hardware(136, None) == ["1x H200"]


def test_allowed_hardware_is_used_in_the_users_order() -> None:
    allowed = ["2x H100S", "1x L40", "1x A100"]
    candidates = candidate_hardware(500, allowed)
    assert candidates == allowed
    candidates.append("mutated")
    assert allowed == ["2x H100S", "1x L40", "1x A100"]


def test_empty_allowed_hardware_means_automatic() -> None:
    assert candidate_hardware(70, []) == candidate_hardware(70, None)
