"""``aow.tokens`` and ``aow.secrets``: an organization's API tokens and secrets.

Every method may raise ``StackUnavailable`` / ``Unavailable`` when the service cannot be
reached (after retrying), and ``Forbidden`` where it needs an admin token.
"""

from __future__ import annotations

from openweights.sdk.transport import Transport
from openweights.sdk.types import (
    NewToken,
    RevokedToken,
    SecretRemoved,
    SecretsSet,
    TokenInfo,
)


class AsyncTokens:
    """API tokens of your organization (admin tokens only)."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def create(self, name: str, role: str = "user",
                     expires_in_s: int | None = None, worker_id: str | None = None) -> NewToken:
        """A new token; its plain text (``token``) is returned this once only. A
        ``role="worker"`` token names ``worker_id``: with it, `ow worker` joins a machine
        of yours as that worker. Raises ``InvalidRequest`` for an empty name, a bad
        expiry, or a worker id without the worker role (or the reverse)."""
        result: NewToken = await self._t.call("tokens.create", name=name, role=role,
                                              expires_in_s=expires_in_s, worker_id=worker_id)
        return result

    async def list(self) -> list[TokenInfo]:
        """Every token: id, name, role, prefix, status, times (never the token)."""
        result: list[TokenInfo] = await self._t.call("tokens.list", read=True)
        return result

    async def revoke(self, token_id: str) -> RevokedToken:
        """Revoke and disconnect every live connection made with it. Raises ``NotFound``."""
        result: RevokedToken = await self._t.call("tokens.revoke", token_id=token_id)
        return result


class AsyncSecrets:
    """Organization secrets (HF_TOKEN, MAX_WORKERS, ...), encrypted at rest."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def set(self, **values: str) -> SecretsSet:
        """Set (or replace) secrets by name."""
        result: SecretsSet = await self._t.call("secrets.set", values=values)
        return result

    async def list(self) -> list[str]:
        """Names only."""
        result: list[str] = await self._t.call("secrets.list")
        return result

    async def show(self) -> dict[str, str]:
        """Names and values (admin tokens only)."""
        result: dict[str, str] = await self._t.call("secrets.show")
        return result

    async def remove(self, name: str) -> SecretRemoved:
        """Remove a secret. Raises ``NotFound``."""
        result: SecretRemoved = await self._t.call("secrets.remove", name=name)
        return result
