"""``OW_NATS_URL`` as nats-py wants it: a list of servers, credentials given once.

A cluster's URL names each node, comma-separated
(``nats://svc:pw@nats-1:4222,nats://nats-2:4222``). nats-py reads a string as one
server, and the servers a cluster announces (its ``connect_urls``) carry no
credentials: a reconnect to one of them would knock as nobody and be refused. So the
list is split, and user and password (or a token) go to ``nats.connect`` as options,
which nats-py sends to every server, announced ones included.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit


def servers(url: str) -> list[str]:
    """The servers of ``url`` (comma-separated), without their credentials."""
    out = []
    for part in url.split(","):
        part = part.strip()
        if not part:
            continue
        if "://" not in part:
            part = f"nats://{part}"
        parts = urlsplit(part)
        host = parts.hostname or "127.0.0.1"
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        out.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    if not out:
        raise ValueError(f"no NATS server in {url!r}")
    return out


def credentials(url: str) -> tuple[str | None, str | None]:
    """``(user, password)`` of the first server of ``url`` that names any; a user
    without a password is a token (nats-py's own reading of ``token@host``)."""
    for part in url.split(","):
        parts = urlsplit(part.strip() if "://" in part else f"nats://{part.strip()}")
        if parts.username is not None:
            user = unquote(parts.username)
            return user, unquote(parts.password) if parts.password is not None else None
    return None, None


def connect_options(url: str) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``: ``servers`` and the credentials."""
    options: dict[str, Any] = {"servers": servers(url)}
    user, password = credentials(url)
    if user is not None and password is not None:
        options.update(user=user, password=password)
    elif user is not None:
        options["token"] = user
    return options


def first_url(url: str) -> str:
    """The first server of ``url`` with ``url``'s credentials in it, for readers that
    take one server (the bulk reader of ``ow replay``)."""
    first = servers(url)[0]
    user, password = credentials(url)
    if user is None:
        return first
    scheme, _, hostport = first.partition("://")
    secret = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None
                                     else "")
    return f"{scheme}://{secret}@{hostport}"
