"""Ids that become subject tokens are refused at the edge (issue 13, finding 10).

A raw client sends requests whose ids hold what a NATS subject token must not (dots,
wildcards, whitespace): each is refused with an error naming the field, and nothing is
appended to the log.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import nats
import pytest

from openweights.api import protocol
from tests.tenancy.conftest import A, World, raw_connect

pytestmark = pytest.mark.anyio

BAD = "a\tb*>"
# (endpoint, body, the field the error must name)
REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("run.script.start", {"script": "s", "host": BAD}, "host"),
    ("run.script.start", {"script": "s", "host": "x>"}, "host"),
    ("agent.register", {"worker_id": BAD, "docker_image": "i", "hardware_type": "cpu"},
     "worker_id"),
    ("agent.register", {"worker_id": "w 1", "docker_image": "i", "hardware_type": "cpu"},
     "worker_id"),
    ("agent.ttl", {"worker_id": "w.1", "ttl_until": "2030-01-01T00:00:00Z"}, "worker_id"),
    ("runs.list", {"worker_id": "w*"}, "worker_id"),
    ("runs.list", {"job_id": "j>"}, "job_id"),
    ("jobs.get", {"job_id": "j\n"}, "job_id"),
    ("logs.read", {"run_id": "r.1"}, "run_id"),
    ("events.list", {"run_id": "r*"}, "run_id"),
    ("agent.run.start", {"worker_id": "w1", "job_id": "j.1", "run_id": "r1"}, "job_id"),
    ("tokens.revoke", {"token_id": "t k"}, "token_id"),
    ("files.get", {"file_id": "file-1.x"}, "file_id"),
]


async def _last_seq(world: World) -> int:
    nc = await nats.connect(str(world.settings.nats_url), allow_reconnect=False)
    try:
        return (await nc.jetstream().stream_info(world.subjects.events_stream)).state.last_seq
    finally:
        await nc.close()


async def test_ids_that_become_subject_tokens_are_refused_naming_the_field(
        world: World) -> None:
    before = await _last_seq(world)
    nc = await raw_connect(world, world.tokens["a_admin"])
    subject = world.subjects.api(A, world.tid("a_admin"), "{}")
    answers = []
    for endpoint, body, field in REQUESTS:
        reply = await nc.request(subject.format(endpoint), json.dumps(body).encode(), timeout=5)
        answer = protocol.reply_decoder.decode(reply.data)
        answers.append((endpoint, field, answer))
    await nc.close()
    for endpoint, field, answer in answers:
        assert answer.error is not None, f"{endpoint} with a bad {field} answered {answer.ok!r}"
        assert answer.error.code == "invalid", (endpoint, answer.error)
        assert field in answer.error.message, (endpoint, answer.error.message)
        assert "without dots, '*', '>' or whitespace" in answer.error.message
    assert await _last_seq(world) == before  # nothing appended


async def test_a_script_runs_host_still_becomes_its_worker_id(world: World) -> None:
    """A host name with dots or spaces is made one token, as before."""
    ow = world.ow("a_admin")
    started = await anyio.to_thread.run_sync(lambda: ow.call(ow.transport.call(
        "run.script.start", script="s", host="gpu box.example.org")))
    run = await anyio.to_thread.run_sync(lambda: ow.call(ow.transport.call(
        "runs.get", read=True, run_id=started["run_id"])))
    assert run["worker_id"] == "script-gpu-box-example-org"
