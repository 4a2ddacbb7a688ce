"""Where the stack is: explicit ``OW_NATS_URL``/``OW_DATABASE_URL``, else what `ow up`
recorded in ``$OW_HOME/stack.json`` for the local embedded stack."""

from __future__ import annotations

import json
import os
from pathlib import Path

from openweights.config import Settings
from openweights.errors import StackUnavailable


def stack_file(settings: Settings) -> Path:
    return settings.home / "stack.json"


def write_stack(settings: Settings, nats_url: str, database_url: str,
                token_file: str | None = None) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    path = stack_file(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"nats_url": nats_url, "database_url": database_url,
                               "namespace": settings.namespace, "pid": os.getpid(),
                               "token_file": token_file}))
    tmp.replace(path)


def local_token(settings: Settings) -> str | None:
    """The local admin token of a running `ow up` (used when no API key is given)."""
    info = read_stack(settings)
    path = info.get("token_file") if info else None
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def clear_stack(settings: Settings) -> None:
    """Forget the stack this process recorded; a stack recorded by another `ow up` (one
    still running on the same home) stays."""
    path = stack_file(settings)
    try:
        recorded = json.loads(path.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return
    if recorded == os.getpid():
        path.unlink(missing_ok=True)


def ports_file(settings: Settings) -> Path:
    return settings.home / "ports.json"


def recorded_port(settings: Settings, server: str) -> int | None:
    """The port ``server`` ("nats") listened on when `ow up` last ran on this home: clients
    that outlive an `ow up` find the next one where they left it."""
    try:
        data = json.loads(ports_file(settings).read_text())
    except (OSError, ValueError):
        return None
    port = data.get(server) if isinstance(data, dict) else None
    return port if isinstance(port, int) and 0 < port < 65536 else None


def record_port(settings: Settings, server: str, port: int) -> None:
    path = ports_file(settings)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data = {**(data if isinstance(data, dict) else {}), server: port}
    settings.home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_stack(settings: Settings) -> dict[str, str] | None:
    try:
        data = json.loads(stack_file(settings).read_text())
    except (OSError, ValueError):
        return None
    pid = data.get("pid")
    if isinstance(pid, int) and not _alive(pid):
        return None
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve(settings: Settings, *, need_database: bool = False) -> Settings:
    """Settings with the stack's URLs filled in; raises :class:`StackUnavailable`."""
    nats_url, database_url = settings.nats_url, settings.database_url
    if nats_url is None or (need_database and database_url is None):
        local = read_stack(settings)
        if local is None:
            raise StackUnavailable(
                "no openweights stack found: start one with `ow up` (or set OW_NATS_URL"
                + (" and OW_DATABASE_URL" if need_database else "") + ")"
            )
        nats_url = nats_url or local["nats_url"]
        database_url = database_url or local["database_url"]
    return settings.model_copy(update={"nats_url": nats_url, "database_url": database_url})


def operator_settings(settings: Settings) -> Settings:
    """Settings for operator tools that read the log directly (replay, audit, org create).

    They need the services' credentials: given in ``OW_NATS_URL``, or, for the local
    `ow up` stack, read from ``$OW_HOME/nats-auth.json``.
    """
    s = resolve(settings, need_database=True)
    if settings.nats_url is not None:
        return s
    auth_file = settings.home / "nats-auth.json"
    if not auth_file.exists():
        return s
    from urllib.parse import urlsplit

    from openweights.adapters.nats.server_config import NatsAuthConfig

    auth = NatsAuthConfig.load_or_create(auth_file)
    parts = urlsplit(str(s.nats_url))
    url = f"nats://svc:{auth.password('svc')}@{parts.hostname}:{parts.port}"
    return s.model_copy(update={"nats_url": url})
