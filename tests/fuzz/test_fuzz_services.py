"""Fuzzing every service subject with hypothesis (the cases and the properties each one
keeps are in ``conftest.py``): typed, mutated and raw requests to every api endpoint,
corrupted dataset uploads, ``whoami`` and the agent's assignment subject.

A few hundred cases; ``bench/fuzz.py`` runs 10,000 of the same.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from openweights.api import protocol

# ``fuzz`` is conftest's Runner: call it with a case, get the case's Outcome.
# Cases change the stack (and the ids later cases draw), so a shrunk case is not the
# failing one: report the failure as found, with the property it broke.
FUZZ = {"deadline": None, "database": None, "phases": [Phase.explicit, Phase.generate],
        "suppress_health_check": list(HealthCheck)}


def run(fuzz: Any, strategy: st.SearchStrategy, examples: int) -> Counter[str]:
    """Run ``examples`` cases; every one must keep the properties. Their statuses."""
    seen: Counter[str] = Counter()

    @settings(max_examples=examples, **FUZZ)
    @given(strategy)
    def one(case: object) -> None:
        outcome = fuzz(case)
        seen[outcome.status] += 1
        assert outcome.status != "error", f"{outcome.detail}\n  case: {case!r:.1500}"

    one()
    return seen


def test_typed_requests_to_every_endpoint(fuzz: Any) -> None:
    accepted: Counter[str] = Counter()
    for endpoint in protocol.ENDPOINTS:
        accepted[endpoint] = run(fuzz, fuzz.strategies.typed(endpoint), 6)["accepted"]
    assert run(fuzz, fuzz.strategies.valid(), 30)["accepted"] == 30
    assert sum(accepted.values()) > 0


def test_mutated_requests_to_every_endpoint(fuzz: Any) -> None:
    statuses: Counter[str] = Counter()
    for endpoint in protocol.ENDPOINTS:
        statuses += run(fuzz, fuzz.strategies.mutated(endpoint), 4)
    assert statuses["rejected:invalid"] > 0


def test_raw_bytes_to_every_service_subject(fuzz: Any) -> None:
    statuses: Counter[str] = Counter()
    for endpoint in (*protocol.ENDPOINTS, protocol.UPLOAD_CHUNK):
        statuses += run(fuzz, fuzz.strategies.raw(endpoint), 3)
    statuses += run(fuzz, fuzz.strategies.whoami(), 20)
    statuses += run(fuzz, fuzz.strategies.assignment(), 40)
    assert statuses["rejected:invalid"] > 0


def test_corrupted_dataset_uploads(fuzz: Any) -> None:
    statuses = run(fuzz, fuzz.strategies.upload(), 60)
    assert statuses["rejected:invalid"] > 0


def test_secrets_without_a_secret_key(fuzz_without_secret_key: Any) -> None:
    fuzz = fuzz_without_secret_key
    refused = fuzz.call("secrets.set", values={"TOKEN": "x"})
    assert refused.status == "rejected:secret_key_missing", refused
    for endpoint in ("secrets.set", "secrets.show", "secrets.list", "agent.secrets"):
        run(fuzz, fuzz.strategies.typed(endpoint), 8)


def test_hostile_json_is_refused_as_invalid_and_never_kills_the_agent(fuzz: Any) -> None:
    """Found by the 10,000-case run: msgspec raises RecursionError for JSON nested deeper
    than it recurses and UnicodeDecodeError for invalid UTF-8, not DecodeError."""
    deep = b'{"v":1,"job_id":' + b"[" * 5000 + b"]" * 5000 + b"}"
    bad_utf8 = b'{"v":1,"job_id":"\xed\xa0\x80"}'
    for payload in (deep, bad_utf8):
        refused = fuzz.raw("jobs.get", payload)
        assert refused.status == "rejected:invalid", refused
        dropped = fuzz.assign(payload)
        assert dropped.status == "unanswered", dropped


def test_values_nested_past_the_bound_are_invalid(fuzz: Any) -> None:
    """Found by the 10,000-case run: params nested 2,000 deep decoded (on its stack),
    then broke what walks them later, and jobs.find answered 'internal'. Requests are
    bounded at protocol.MAX_NESTING levels, whatever the stack."""
    def find(depth: int) -> Any:
        params = b'{"a":' * depth + b"1" + b"}" * depth
        return fuzz.raw("jobs.find", b'{"request_id":null,"v":1,"params":' + params + b"}")

    assert find(protocol.MAX_NESTING - 1).status == "accepted"
    for depth in (protocol.MAX_NESTING, 2000):
        refused = find(depth)
        assert refused.status == "rejected:invalid", refused
