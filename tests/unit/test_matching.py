"""Who may run what, and what goes first: given jobs and workers, when matched, then who.

Pure values built here; every rule of ``openweights.domain.matching`` has its case.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from openweights.domain.job import JobState
from openweights.domain.matching import cached_model, matches, pick_worker, priority
from openweights.domain.worker import WorkerState
from openweights.events import JobSpec

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ORG, OTHER_ORG = "org-a", "org-b"
IMAGE = "img:v1"
SPEC = JobSpec(type="fine-tuning", model="unsloth/Qwen3-8B", params={}, script="train",
               docker_image=IMAGE, requires_vram_gb=None, allowed_hardware=None)


def job(job_id: str = "job-1", *, org: str = ORG, since: datetime = T0,
        **spec: Any) -> JobState:
    """A pending job; ``since`` is when it became pending, ``spec`` changes ``SPEC``."""
    return JobState(id=job_id, org=org, spec=msgspec.structs.replace(SPEC, **spec),
                    status="pending", created_at=T0, updated_at=since)


def worker(worker_id: str = "w1", *, org: str = ORG, image: str = IMAGE,
           hardware: str = "1x H100S", vram: int = 80) -> WorkerState:
    """An active worker of ``hardware`` with ``vram`` GB."""
    return WorkerState(id=worker_id, org=org, status="active", created_at=T0, updated_at=T0,
                       docker_image=image, hardware_type=hardware, vram_gb=vram)


# -- matches: image, organization, VRAM, allowed hardware ------------------------------
@pytest.mark.parametrize(("the_job", "the_worker", "expected"), [
    pytest.param(job(), worker(), True, id="same image, no need"),
    pytest.param(job(), worker(image="img:v2"), False, id="another image"),
    pytest.param(job(), worker(org=OTHER_ORG), False, id="another organization's worker"),
    pytest.param(job(requires_vram_gb=80), worker(vram=80), True, id="need equal to VRAM"),
    pytest.param(job(requires_vram_gb=81), worker(vram=80), False, id="need above VRAM"),
    pytest.param(job(requires_vram_gb=None), worker(hardware="cpu", vram=0), True,
                 id="no need fits a CPU worker"),
    pytest.param(job(requires_vram_gb=0), worker(hardware="cpu", vram=0), True,
                 id="a need of 0 fits a CPU worker"),
    pytest.param(job(requires_vram_gb=1), worker(hardware="cpu", vram=0), False,
                 id="any need excludes a CPU worker"),
    pytest.param(job(allowed_hardware=["2x A100", "1x H100S"]), worker(), True,
                 id="hardware listed"),
    pytest.param(job(allowed_hardware=["2x H100S"]), worker(hardware="1x H100S"), False,
                 id="same GPU, other count: not listed"),
    pytest.param(job(allowed_hardware=["1x H200"], requires_vram_gb=500),
                 worker(hardware="1x H200", vram=141), True,
                 id="listed hardware wins over the VRAM need"),
    pytest.param(job(allowed_hardware=["1x H200"]), worker(hardware="1x H200", image="other"),
                 False, id="listed hardware, another image"),
    pytest.param(job(allowed_hardware=[], requires_vram_gb=100), worker(vram=80), False,
                 id="an empty list means no restriction: the VRAM need decides"),
])
def test_matches(the_job: JobState, the_worker: WorkerState, expected: bool) -> None:
    assert matches(the_job, the_worker) is expected


# -- cached_model: what a worker keeps after running a job -----------------------------
@pytest.mark.parametrize(("model", "cached"), [
    ("unsloth/Qwen3-8B", "unsloth/Qwen3-8B"),
    ("unsloth/Qwen3-8B/checkpoint-100", "unsloth/Qwen3-8B"),  # a revision: the repo
    ("gpt2", "gpt2"),  # no organization: the name itself
    (None, None),
    ("", None),
])
def test_cached_model_is_the_org_and_repo(model: str | None, cached: str | None) -> None:
    assert cached_model(model) == cached


# -- pick_worker: cached model first, then the smallest that fits, then the id ---------
def test_no_matching_idle_worker_picks_none() -> None:
    assert pick_worker(job(requires_vram_gb=100), [worker(vram=80)], {}) is None
    assert pick_worker(job(), [], {}) is None


def test_the_smallest_fitting_worker_is_picked_leaving_big_ones_for_big_jobs() -> None:
    big, small = worker("big", hardware="1x H200", vram=141), worker("small", vram=80)
    assert pick_worker(job(requires_vram_gb=40), [big, small], {}) is small


def test_a_worker_with_the_model_cached_beats_a_smaller_one() -> None:
    big, small = worker("big", hardware="1x H200", vram=141), worker("small", vram=80)
    cached = {"big": {"unsloth/Qwen3-8B"}, "small": {"unsloth/other"}}
    chosen = pick_worker(job(model="unsloth/Qwen3-8B/checkpoint-7"), [small, big], cached)
    assert chosen is big


def test_among_workers_with_the_model_cached_the_smallest_wins() -> None:
    big, small = worker("big", hardware="1x H200", vram=141), worker("small", vram=80)
    cached = {"big": {"unsloth/Qwen3-8B"}, "small": {"unsloth/Qwen3-8B"}}
    assert pick_worker(job(), [big, small], cached) is small


def test_a_cached_model_never_makes_a_worker_that_does_not_match_eligible() -> None:
    wrong_image = worker("cached", image="img:v2")
    plain = worker("plain", hardware="1x H200", vram=141)
    cached = {"cached": {"unsloth/Qwen3-8B"}}
    assert pick_worker(job(), [wrong_image, plain], cached) is plain


def test_a_job_without_a_model_prefers_no_worker_for_its_cache() -> None:
    big, small = worker("big", hardware="1x H200", vram=141), worker("small", vram=80)
    assert pick_worker(job(model=None), [big, small], {"big": {"unsloth/Qwen3-8B"}}) is small


def test_equal_workers_are_told_apart_by_id_whatever_their_order() -> None:
    a, b = worker("w-a"), worker("w-b")
    assert pick_worker(job(), [b, a], {}) is a
    assert pick_worker(job(), [a, b], {}) is a


# -- priority: larger VRAM need first, then pending longest, then the id ---------------
def ordered(*jobs: JobState) -> list[str]:
    return [j.id for j in sorted(jobs, key=priority)]


def test_a_larger_vram_need_goes_first_however_young() -> None:
    old_small = job("old-small", requires_vram_gb=8)
    young_big = job("young-big", requires_vram_gb=80, since=T0 + timedelta(hours=1))
    no_need = job("no-need", requires_vram_gb=None, since=T0 - timedelta(hours=1))
    assert ordered(old_small, no_need, young_big) == ["young-big", "old-small", "no-need"]


def test_with_equal_needs_the_job_pending_longest_goes_first() -> None:
    later, earlier = job("a-later", since=T0 + timedelta(seconds=1)), job("z-earlier")
    assert ordered(later, earlier) == ["z-earlier", "a-later"]


def test_no_vram_need_and_a_need_of_zero_rank_alike() -> None:
    assert priority(job(requires_vram_gb=None)) == priority(job(requires_vram_gb=0))


def test_complete_ties_are_broken_by_job_id() -> None:
    assert ordered(job("job-b"), job("job-a"), job("job-c")) == ["job-a", "job-b", "job-c"]
