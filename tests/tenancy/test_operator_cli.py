"""`ow org create` is an operator command (issue 21, defect 7): it needs the services'
credentials, a tenant's token on the operator's machine does not borrow them, and a
second create of the same name says the organization exists instead of "created"."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner, Result

from openweights.cli.main import app
from openweights.config import Settings
from openweights.stack import write_stack
from tests.tenancy.conftest import World


def _on_operators_machine(world: World, home: Path, token: str, *args: str) -> Result:
    """`ow` on the machine of a local `ow up`: its OW_HOME records the stack and holds the
    services' credentials (nats-auth.json); no OW_NATS_URL, a tenant's token in the env."""
    assert world.settings.nats_auth_file is not None
    if not (home / "stack.json").exists():
        write_stack(Settings(home=home, namespace=world.ns), world.server.url,
                    str(world.settings.database_url))
        shutil.copy(world.settings.nats_auth_file, home / "nats-auth.json")
    env = {"OW_NATS_URL": None, "OW_DATABASE_URL": None, "OW_NAMESPACE": world.ns,
           "OW_HOME": str(home), "OPENWEIGHTS_API_KEY": token, "COLUMNS": "80"}
    return CliRunner().invoke(app, list(args), env=env)


def test_a_second_create_of_the_same_name_says_it_exists(world: World) -> None:
    first = world.cli("a_admin", "org", "create", "acme", operator=True)
    assert first.exit_code == 0, first.output
    assert "organization acme created" in first.output
    again = world.cli("a_admin", "org", "create", "acme", operator=True)
    assert again.exit_code == 1, again.output
    assert "already exists" in again.output and "acme created" not in again.output
    assert "ow_" not in again.output  # no token was made
    more = world.cli("a_admin", "org", "create", "acme", "--new-admin-token", operator=True)
    assert more.exit_code == 0, more.output
    assert "organization acme exists; new admin token" in more.output
    token = more.output.split()[-1]
    world.wait_usable(token)
    assert world.ow(token).organization_id == "acme"


def test_a_tenants_admin_token_cannot_create_on_the_operators_machine(
        world: World, tmp_path: Path) -> None:
    home = tmp_path / "ow-home"
    home.mkdir()
    refused = _on_operators_machine(world, home, world.tokens["a_admin"],
                                    "org", "create", "evil")
    assert refused.exit_code == 1, refused.output
    assert "operator" in refused.output and "OPENWEIGHTS_API_KEY" in refused.output
    # Nothing was made: the operator's own create of that name is a first one.
    made = world.cli("a_admin", "org", "create", "evil", operator=True)
    assert made.exit_code == 0 and "organization evil created" in made.output, made.output
