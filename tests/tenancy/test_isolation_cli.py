"""Every `ow` command with a token of org A against org B's resources (issue 5, Tests).

As for the SDK: the output and exit code for B's id are those for an id that exists
nowhere (but for the id), and listings show nothing of B.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.tenancy.conftest import Data, World

# Each command with "{job}", "{file}", ... standing for one of B's ids.
COMMANDS = [
    ["show", "{job}"],
    ["show", "{job}", "--json"],
    ["logs", "{job}"],
    ["logs", "{job}", "--run-id", "{run}"],
    ["logs", "{job}", "--follow"],
    ["events", "{job}"],
    ["events", "{job}", "--json"],
    ["events", "{job}", "--follow"],
    ["cancel", "{job}"],
    ["cancel", "{job}", "--json"],
    ["restart", "{job}"],
    ["fetch", "{file}"],
    ["token", "revoke", "{token}"],
    ["env", "rm", "{secret}"],
]


def _fill(args: list[str], values: dict[str, str]) -> list[str]:
    return [a.format(**values) for a in args]


@pytest.mark.parametrize("who", ["a_admin", "a_user"])
@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_a_command_on_bs_id_answers_as_for_an_id_that_does_not_exist(
        populated: tuple[World, Data], who: str, args: list[str]) -> None:
    world, d = populated
    real = {"job": d.job_b, "file": d.file_b, "run": d.run_b, "token": d.token_b_user,
            "secret": d.secret_b}
    fake = {"job": d.job_b[:-6] + "ffffff", "file": d.file_b[:-6] + "ffffff", "run": "run-zz",
            "token": "tok-" + "f" * 16, "secret": "NO_SUCH_SECRET"}
    got_real = world.cli(who, *_fill(args, real))
    got_fake = world.cli(who, *_fill(args, fake))
    assert got_real.exit_code == 1, got_real.output
    out_real, out_fake = got_real.output, got_fake.output
    for key in real:
        out_real = out_real.replace(real[key], f"<{key}>")
        out_fake = out_fake.replace(fake[key], f"<{key}>")
    assert (got_real.exit_code, out_real) == (got_fake.exit_code, out_fake)
    assert d.marker not in got_real.output and d.secret_b_value not in got_real.output
    if who == "a_admin" or args[0] not in ("token", "env"):
        assert "not found" in got_real.output
    else:
        assert "needs an admin token" in got_real.output


def test_listings_show_nothing_of_b(populated: tuple[World, Data], tmp_path: Path) -> None:
    world, d = populated
    outputs = {}
    for who in ("a_admin", "a_user"):
        for args in (["ls", "--json"], ["ls"], ["ls", "--ids"], ["env", "ls"]):
            result = world.cli(who, *args)
            assert result.exit_code == 0, result.output
            outputs[(who, *args)] = result.output
    jobs = json.loads(outputs[("a_admin", "ls", "--json")])
    assert d.job_a in [j["id"] for j in jobs]
    assert {j["organization_id"] for j in jobs} == {"orgA"}
    assert outputs[("a_user", "env", "ls")].split() == ["A_SECRET"]
    for args in (["token", "ls", "--json"], ["token", "ls"], ["env", "show"]):
        result = world.cli("a_admin", *args)
        assert result.exit_code == 0, result.output
        outputs[("a_admin", *args)] = result.output
    tokens = json.loads(outputs[("a_admin", "token", "ls", "--json")])
    assert {t["id"] for t in tokens} == {world.tid("a_admin"), world.tid("a_user")}
    assert re.fullmatch(r"A_SECRET=a-secret-[0-9a-f]{32}\n", outputs[("a_admin", "env", "show")])
    # A uploads B's bytes: a file of A's, not B's.
    path = tmp_path / "same.bin"
    path.write_bytes(d.file_b_bytes)
    uploaded = world.cli("a_user", "files", "upload", str(path), "--purpose", "blob")
    assert uploaded.exit_code == 0, uploaded.output
    assert uploaded.output.strip() == d.file_a != d.file_b
    text = "".join(outputs.values())
    for secret in (d.marker, d.job_b, d.file_b, d.run_b, d.worker_b, d.token_b_user,
                   world.tid("b_admin"), d.secret_b, d.secret_b_value, "orgB"):
        assert secret not in text


def test_a_tenant_cannot_create_organizations(populated: tuple[World, Data]) -> None:
    world, _ = populated
    # `ow org create` needs the services' credentials: a token (or nothing) is refused.
    result = world.cli("a_admin", "org", "create", "evil")
    assert result.exit_code != 0
    assert "ow_" not in result.output
    b = world.ow("b_admin")
    assert b.jobs.list() is not None  # the operator path refused without side effects
