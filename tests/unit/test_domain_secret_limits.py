"""Secret values and an organization's secrets in all are bounded (issue 13, finding 2):
every job gets them in its environment, where one string over 128 KiB fails the exec."""

from __future__ import annotations

import pytest

from openweights.domain.secret import MAX_ORG_BYTES, MAX_VALUE_BYTES, check_sizes
from openweights.errors import InvalidRequest

KIB = 1024


def test_the_limits_leave_room_under_the_kernels() -> None:
    assert MAX_VALUE_BYTES == 64 * KIB < 128 * KIB  # MAX_ARG_STRLEN: one "NAME=value"
    assert MAX_ORG_BYTES == 256 * KIB < 2048 * KIB  # what argv and environ share


def test_a_value_up_to_the_limit_is_fine_and_one_byte_more_is_refused() -> None:
    check_sizes({}, {"BIG": "x" * MAX_VALUE_BYTES})
    with pytest.raises(InvalidRequest) as too_big:
        check_sizes({}, {"OK": "fine", "BIG": "x" * (MAX_VALUE_BYTES + 1)})
    message = str(too_big.value)
    assert "BIG" in message and str(MAX_VALUE_BYTES + 1) in message and "64 KiB" in message
    assert "ow.files.upload" in message and "xxxx" not in message  # never the value
    with pytest.raises(InvalidRequest, match="at most 65536 bytes"):
        check_sizes({}, {"WIDE": "é" * (MAX_VALUE_BYTES // 2 + 1)})  # bytes, not characters


def test_the_total_counts_names_and_values_and_a_replaced_value_only_once() -> None:
    value = "x" * (60 * KIB)
    held = {"A": 60 * KIB, "B": 60 * KIB, "C": 60 * KIB, "D": 60 * KIB}
    check_sizes(held, {"D": value})  # replaces D: the total stays at 240 KiB
    check_sizes(held, {"E": "x" * (MAX_ORG_BYTES - 240 * KIB - 5)})  # names: 5 bytes
    with pytest.raises(InvalidRequest) as over:
        check_sizes(held, {"E": "x" * (MAX_ORG_BYTES - 240 * KIB - 4)})
    message = str(over.value)
    assert f"{MAX_ORG_BYTES + 1} bytes" in message and "256 KiB" in message
    assert "ow env rm" in message
