"""`ow org`, `ow token`, `ow env`: organizations, API tokens and secrets."""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from pathlib import Path

import anyio
import typer

from openweights.cli.common import JSON_OPT, client, console, friendly, settings, when
from openweights.cli.tables import fit_table
from openweights.config import Settings
from openweights.errors import Forbidden, InvalidRequest

DURATION = re.compile(r"^(\d+)([smhdw])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    m = DURATION.match(text.strip())
    if not m:
        raise InvalidRequest(f"duration {text!r}: use a number and s, m, h, d or w (e.g. 30d)")
    return int(m.group(1)) * UNIT_S[m.group(2)]


def parse_env_lines(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        if "=" not in line:
            raise InvalidRequest(f"line {n}: {raw.strip()!r} is not KEY=VALUE")
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


@friendly
def org_create(name: str, org_id: str = typer.Option(None, "--id", help="default: name"),
               new_admin_token: bool = typer.Option(
                   False, "--new-admin-token",
                   help="if it exists: give it another admin token instead of failing"),
               as_json: bool = JSON_OPT) -> None:
    """Create an organization and print its first admin token (shown once). Operators
    only: it needs the services' credentials, not a token."""
    from openweights.bootstrap import create_organization

    result = anyio.run(lambda: create_organization(
        _operator(), org_id or name, name, exist_ok=new_admin_token))
    if as_json:
        console.print_json(json.dumps(result))
        return
    done = "created" if result["created"] else "exists; new admin token"
    console.print(f"organization {result['org']} {done} ({result['token_id']}), "
                  "shown once, keep it safe:", highlight=False)
    console.print(result["token"], soft_wrap=True)


class OperatorOnly(Forbidden):
    hint = "operators create organizations; tenants' admins create tokens (`ow token create`)"


def _operator() -> Settings:
    """The services' credentials: given in OW_NATS_URL, or the local stack's, which
    this CLI reads from OW_HOME only when no token says whose it is acting for (a
    tenant's admin token must not become an operator's by running on that machine)."""
    from openweights.stack import operator_settings

    s = settings()
    if s.nats_url is None and os.environ.get("OPENWEIGHTS_API_KEY"):
        raise OperatorOnly("creating an organization needs the operator's credential, and "
                        "OPENWEIGHTS_API_KEY holds a token: unset it to act as the operator "
                        "of this machine's `ow up`, or set OW_NATS_URL to the services' "
                        "(nats://svc:<password>@host:port)")
    return operator_settings(s)


@friendly
def token_create(name: str = typer.Option(..., "--name"),
                 expires: str = typer.Option(None, "--expires", help="e.g. 30d, 12h"),
                 role: str = typer.Option("user", "--role", help="user, admin or worker"),
                 worker: str = typer.Option(None, "--worker",
                                            help="a worker token's machine name (ow worker)"),
                 as_json: bool = JSON_OPT) -> None:
    """Create a token; it is printed once and stored only as a hash. `--role worker
    --worker NAME` mints the credentials `ow worker` joins a machine of yours with."""
    if worker is not None and role == "user":
        role = "worker"
    with client() as ow:
        t = ow.tokens.create(name, role=role,
                             expires_in_s=parse_duration(expires) if expires else None,
                             worker_id=worker)
    if as_json:
        console.print_json(json.dumps(t, default=str))
    else:
        console.print(f"token {t['id']} ({t['role']}), shown once:")
        console.print(t["token"], soft_wrap=True)


@friendly
def token_ls(as_json: bool = JSON_OPT) -> None:
    """Tokens: id, name, role, prefix, created, expires, last used, status."""
    with client() as ow:
        rows = ow.tokens.list()
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    cells = [[r["id"], r["name"], r["role"], r["token_prefix"] + "…", when(r["created_at"]),
              when(r["expires_at"]) or "-", when(r["last_used_at"]) or "-", r["status"]]
             for r in rows]
    console.print(fit_table(
        console, ["id", "name", "role", "prefix", "created", "expires", "last used", "status"],
        cells, ids=["id"], droppable=["prefix", "last used", "created", "expires"]))


@friendly
def token_revoke(token_id: str) -> None:
    """Revoke a token and disconnect its live connections."""
    with client() as ow:
        r = ow.tokens.revoke(token_id)
    console.print(f"revoked {r['id']} ({r['disconnected']} connection(s) closed)")


def read_secret_values(names: list[str]) -> dict[str, str]:
    """The values of bare KEYs (no ``=VALUE``), never from argv: each from a hidden
    prompt on a terminal, or the one KEY's value from stdin otherwise."""
    if not names:
        return {}
    if not sys.stdin.isatty():
        if len(names) > 1:
            raise InvalidRequest(f"{', '.join(names)}: stdin holds one value, so give one "
                                 "KEY when piping it (ow env set KEY < file)")
        values = {names[0]: sys.stdin.read().removesuffix("\n").removesuffix("\r")}
    else:
        values = {n: getpass.getpass(f"value of {n} (hidden): ") for n in names}
    empty = [n for n, v in values.items() if not v]
    if empty:
        raise InvalidRequest(f"no value given for {', '.join(empty)}: type it at the prompt "
                             "or pipe it in (ow env set KEY < file)")
    return values


@friendly
def env_set(pairs: list[str]) -> None:
    """Set secrets: ow env set KEY=VALUE [KEY=VALUE...], or ow env set KEY [KEY...] to
    keep values out of the process list and shell history: each is read from a hidden
    prompt, or from stdin when that is not a terminal (ow env set HF_TOKEN < token.txt)."""
    values = parse_env_lines([p for p in pairs if "=" in p])
    values.update(read_secret_values([p.strip() for p in pairs if "=" not in p]))
    with client() as ow:
        ow.secrets.set(**values)
    console.print(f"set {', '.join(sorted(values))}", highlight=False)


@friendly
def env_import(path: Path) -> None:
    """Set every KEY=VALUE of a .env file."""
    values = parse_env_lines(path.read_text().splitlines())
    with client() as ow:
        ow.secrets.set(**values)
    console.print(f"imported {len(values)} secret(s): {', '.join(sorted(values))}")


@friendly
def env_ls() -> None:
    """Secret names (no values)."""
    with client() as ow:
        for name in ow.secrets.list():
            console.print(name)


@friendly
def env_show() -> None:
    """Secret names and values (admin tokens only)."""
    with client() as ow:
        for name, value in ow.secrets.show().items():
            console.print(f"{name}={value}", soft_wrap=True, highlight=False)


@friendly
def env_rm(name: str) -> None:
    """Remove a secret of your organization (admin tokens only)."""
    with client() as ow:
        ow.secrets.remove(name)
    console.print(f"removed {name}")
