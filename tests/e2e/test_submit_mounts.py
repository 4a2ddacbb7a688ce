"""``jobs.submit`` refuses mounts an agent could not set up (issue 13, finding 2): every
mounted file must be a file of the organization and every target a plain path inside
the job's directory. The refusal names what is wrong and appends nothing."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from openweights import OpenWeights
from openweights.config import Settings
from openweights.errors import InvalidRequest
from tests.e2e.test_bad_input import _last_seq


@pytest.fixture
def file_id(ow: OpenWeights) -> str:
    return str(ow.files.create(io.BytesIO(b"print('hi')\n"), purpose="custom_job_file")["id"])


@pytest.fixture
def unchanged_log(stack: Settings, file_id: str) -> Iterator[None]:
    """The test must leave the event stream as long as it found it (after the upload)."""
    before = anyio.run(_last_seq, stack)
    yield
    assert anyio.run(_last_seq, stack) == before


def submit(ow: OpenWeights, mounted: Any) -> Any:
    return ow.jobs.submit(id_prefix="mounts", script="ls", docker_image="img",
                          params={"mounted_files": mounted})


BAD_TARGETS = [
    ("../x", "'..' would leave"), ("a/../../x", "'..' would leave"), ("/etc/x", "relative"),
    ("uploads", "reserved"), ("uploads/extra.txt", "reserved"), ("./uploads/x", "reserved"),
    (".", "directory itself"), ("./", "directory itself"), ("", "non-empty path"),
    ("a\x1bb", "control characters"), ("a\nb", "control characters"),
    ("x" * 256, "longer than 255 bytes"), ("a/" * 600, "at most 1024 characters"),
]


@pytest.mark.parametrize(("target", "reason"), BAD_TARGETS,
                         ids=[repr(t[:12]) for t, _ in BAD_TARGETS])
def test_a_target_outside_the_job_directory_or_reserved_is_refused(
        ow: OpenWeights, file_id: str, unchanged_log: None, target: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        submit(ow, {target: file_id})
    assert reason in str(refused.value) and "mounted_files" in str(refused.value)


def test_a_mounted_file_must_be_a_known_file_id(ow: OpenWeights, file_id: str,
                                                unchanged_log: None) -> None:
    # The job: not shaped like a file id, so the params check never looked at it.
    for bad in ("file-000000000000", "conversations:file-0123456789ab", "x" * 200):
        with pytest.raises(InvalidRequest) as refused:
            submit(ow, {"x": bad})
        assert "is not a file of this organization" in str(refused.value)
        assert "ow.files.upload" in str(refused.value)
    with pytest.raises(InvalidRequest, match="must be a file id"):
        submit(ow, {"x": 123})
    with pytest.raises(InvalidRequest, match="maps a path in the job's directory"):
        submit(ow, [file_id])


def test_two_targets_that_collide_are_refused(ow: OpenWeights, file_id: str,
                                              unchanged_log: None) -> None:
    with pytest.raises(InvalidRequest, match="same path as another"):
        submit(ow, {"a/b": file_id, "./a//b": file_id})
    with pytest.raises(InvalidRequest, match="mounted as a file"):
        submit(ow, {"lib": file_id, "lib/helpers.py": file_id})


def test_plain_targets_are_accepted(ow: OpenWeights, file_id: str) -> None:
    job = submit(ow, {"worker_side.py": file_id, "lib/sub/data.txt": file_id,
                      "./lib//x.py": file_id, "uploads.txt": file_id, "..a/b": file_id})
    assert job.status == "pending"
    assert submit(ow, None).status == "pending"  # None mounts nothing, like {}
