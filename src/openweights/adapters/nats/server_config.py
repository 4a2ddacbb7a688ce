"""nats-server configuration: plain, or with config-mode auth callout (NATS-AUTH.md §3).

With auth there are three accounts:

- ``AUTH`` holds the ``auth`` user the callout service connects as; the server publishes
  ``$SYS.REQ.USER.AUTH`` requests there.
- ``APP`` has JetStream and holds ``svc``, the openweights services' own user, plus every
  token-authenticated connection the callout places there with per-connection
  permissions.
- ``SYS`` is the system account; its ``sys`` user can KICK connections.

``auth``, ``svc`` and ``sys`` are ``auth_users``: they bypass the callout, so services
keep working while no callout runs. The config must stay static while clients are
connected: any reload drops every callout-authenticated client (NATS-AUTH.md §8).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import msgspec

from openweights.adapters.nats.jwt import new_account_seed, public_key

STATIC_USERS = ("auth", "svc", "sys")


class NatsAuthConfig(msgspec.Struct, frozen=True):
    """The server-side secrets: the callout's issuer seed and the static users' passwords."""

    issuer_seed: str
    auth_password: str
    svc_password: str
    sys_password: str

    @classmethod
    def generate(cls) -> NatsAuthConfig:
        return cls(
            issuer_seed=new_account_seed().decode(),
            auth_password=secrets.token_urlsafe(24),
            svc_password=secrets.token_urlsafe(24),
            sys_password=secrets.token_urlsafe(24),
        )

    @classmethod
    def load_or_create(cls, path: Path) -> NatsAuthConfig:
        """The secrets stored at ``path``, created (mode 0600) on first use.

        Raises :class:`ValueError` naming the file when it exists but is not ours.
        """
        try:
            return msgspec.json.decode(path.read_bytes(), type=cls)
        except FileNotFoundError:
            pass
        except msgspec.DecodeError as exc:
            raise ValueError(
                f"{path} is not a NATS auth config ({exc}): remove it to create a new one "
                "(every service and the callout then need the new secrets)"
            ) from exc
        config = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        # Created 0600 from the first byte: the seed lets its holder admit anyone.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(config))
        os.replace(tmp, path)
        return config

    @property
    def issuer(self) -> str:
        """The public account nkey the server trusts to sign callout answers."""
        return public_key(self.issuer_seed)

    def password(self, user: str) -> str:
        if user not in STATIC_USERS:
            raise ValueError(f"unknown NATS user {user!r}: use one of {', '.join(STATIC_USERS)}")
        password: str = getattr(self, f"{user}_password")
        return password


def _q(value: str) -> str:
    # JSON strings are valid nats-server config strings and escape anything odd.
    return json.dumps(value)


def render_nats_conf(
    host: str,
    port: int,
    store_dir: Path,
    auth: NatsAuthConfig | None,
    max_payload: str = "8MB",
) -> str:
    """The nats-server config file; without ``auth`` anyone may connect to anything."""
    head = (
        f"listen: {host}:{port}\n"
        f"max_payload: {max_payload}\n"
        f"jetstream {{ store_dir: {_q(str(store_dir))} }}\n"
    )
    if auth is None:
        return head
    return head + (
        "accounts {\n"
        f"  AUTH {{ users: [ {{ user: auth, password: {_q(auth.auth_password)} }} ] }}\n"
        "  APP {\n"
        "    jetstream: enabled\n"
        f"    users: [ {{ user: svc, password: {_q(auth.svc_password)} }} ]\n"
        "  }\n"
        f"  SYS {{ users: [ {{ user: sys, password: {_q(auth.sys_password)} }} ] }}\n"
        "}\n"
        "system_account: SYS\n"
        "authorization {\n"
        "  auth_callout {\n"
        f"    issuer: {auth.issuer}\n"
        "    account: AUTH\n"
        f"    auth_users: [ {', '.join(STATIC_USERS)} ]\n"
        "  }\n"
        "}\n"
    )
