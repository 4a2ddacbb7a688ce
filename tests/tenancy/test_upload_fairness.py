"""Upload slots are shared fairly between organizations, and an agent's own log and
result uploads never wait behind users' (issue 13, finding 3).

On the code before the fix two organizations could take all 64 slots of an api
instance (32 each); a third then got ``unavailable: 64 uploads are in progress`` and its
agent could not upload a run's log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from openweights import OpenWeights
from openweights.bootstrap import create_organization
from openweights.errors import InvalidRequest, Unavailable
from tests.tenancy.conftest import A, World

C = "orgC"


def _begin(ow: OpenWeights) -> dict[str, Any]:
    begun: dict[str, Any] = ow.call(ow.transport.call(
        "files.upload.begin", filename="big.bin", purpose="blob"))
    return begun


def _hold_all_it_may(ow: OpenWeights) -> int:
    """Begin uploads (and leave them open) until the service refuses one."""
    held = 0
    while True:
        try:
            _begin(ow)
        except (InvalidRequest, Unavailable):
            return held
        held += 1
        assert held <= 64, "an organization took every slot of the instance"


def test_slots_are_shared_fairly_and_agents_never_wait_behind_users(world: World,
                                                                   tmp_path: Path) -> None:
    made = anyio.run(create_organization, world.settings, C, "org C")
    world.tokens["c_admin"] = made["token"]
    world.wait_usable(made["token"])
    # retry_for_s=0: a refusal is reported at once, not retried.
    a, b, c = (world.ow(name, retry_for_s=0) for name in ("a_admin", "b_admin", "c_admin"))
    held_a, held_b = _hold_all_it_may(a), _hold_all_it_may(b)
    assert held_a >= 1 and held_b >= 1
    # An organization that holds none gets a slot while its neighbours hold all they may.
    first_of_c = _begin(c)
    assert first_of_c["upload_id"]
    held_c = 1 + _hold_all_it_may(c)
    assert held_c >= 1
    # Every user slot an org may take is taken; A's agent still uploads a run's log and
    # result, each at once (the agents' pool is not the users').
    agent = world.ow(world.worker_token(A, "wA"), retry_for_s=0)
    log = tmp_path / "run.log"
    log.write_bytes(b"the run's output\n" * 1000)
    assert agent.files.upload(log, "log")["bytes"] == log.stat().st_size
    assert "file-" in agent.files.upload(log, "result")["id"]
    # A user of A, at its own cap, is told what to do.
    with pytest.raises((InvalidRequest, Unavailable), match=r"retry|end or abort"):
        _begin(a)
