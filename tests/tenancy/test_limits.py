"""One organization's job or secrets cannot reach past their bounds (issue 13, finding 2):
a job cannot mount another organization's file, and secrets are bounded per value and per
organization (every job gets them all in its environment), each org on its own."""

from __future__ import annotations

import io

import pytest

from openweights.errors import InvalidRequest
from tests.tenancy.conftest import World

KIB = 1024
MAX_VALUE_BYTES, MAX_ORG_BYTES = 64 * KIB, 256 * KIB  # as domain/secret.py names them


def test_a_job_cannot_mount_another_organizations_file(world: World) -> None:
    a, b = world.ow("a_admin"), world.ow("b_admin")
    file_a = a.files.create(io.BytesIO(b"alpha's data\n"), purpose="custom_job_file")["id"]
    with pytest.raises(InvalidRequest) as refused:
        b.jobs.submit(id_prefix="steal", script="cat x", docker_image="img",
                      params={"mounted_files": {"x": file_a}})
    assert "is not a file of this organization" in str(refused.value)
    assert a.jobs.submit(id_prefix="own", script="cat x", docker_image="img",
                         params={"mounted_files": {"x": file_a}}).status == "pending"
    assert b.jobs.list() == []


def test_secret_values_and_an_orgs_total_are_bounded_for_each_org(world: World) -> None:
    a, b = world.ow("a_admin"), world.ow("b_admin")
    with pytest.raises(InvalidRequest) as too_big:
        a.secrets.set(HUGE="x" * (128 * KIB))  # what crashed agents (argv too long)
    assert "HUGE" in str(too_big.value) and f"at most {MAX_VALUE_BYTES} bytes" in str(
        too_big.value)
    assert "HUGE" not in a.secrets.list()

    value = "v" * (60 * KIB)
    a.secrets.set(S1=value, S2=value, S3=value, S4=value)  # 240 KiB and a few bytes
    with pytest.raises(InvalidRequest) as over:
        a.secrets.set(S5="v" * (16 * KIB))
    assert f"at most {MAX_ORG_BYTES} bytes" in str(over.value)
    assert "ow env rm" in str(over.value)
    assert sorted(a.secrets.list()) == ["S1", "S2", "S3", "S4"]
    a.secrets.set(S4="short")  # replacing a value frees its room
    a.secrets.set(S5="v" * (16 * KIB))

    # Another organization's secrets do not count against alpha's.
    b.secrets.set(B1=value, B2=value, B3=value, B4=value)
    assert sorted(b.secrets.list()) == ["B1", "B2", "B3", "B4"]
