"""Signed-in sessions: the ``ow_`` token in a cookie, one SDK client per token.

The browser holds the token itself, in an HttpOnly, SameSite=Strict cookie: scripts on
the page cannot read it and other sites' pages cannot send it. The dashboard keeps no
session state of its own beyond a bounded cache of connected clients (the least
recently used is closed past ``dashboard_sessions``), so a restart only reconnects.
Every request is made by that token's client, so the api service and NATS decide what
it may see and do, exactly as for the SDK: the dashboard has no rights of its own.

Forms that change something carry a CSRF token, an HMAC of the session's token under a
key this process drew at start: SameSite=Strict already keeps other sites' requests
from carrying the cookie; the form token also refuses a post whose page this
dashboard did not render for this session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
from collections import OrderedDict

from openweights.config import Settings
from openweights.errors import AuthenticationError
from openweights.sdk.client import AsyncOpenWeights
from openweights.tokens import check as check_token_format

COOKIE = "ow_token"


class Sessions:
    def __init__(self, settings: Settings, bound: int) -> None:
        self.settings = settings  # the clients' settings: the URL token holders use
        self.bound = max(1, bound)
        self._clients: OrderedDict[str, AsyncOpenWeights] = OrderedDict()
        self._key = os.urandom(32)
        self._closing: set[asyncio.Task[None]] = set()

    def csrf(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, token: str, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(self.csrf(token), given)

    async def client(self, token: str) -> AsyncOpenWeights:
        """The connected client of ``token``. Raises ``AuthenticationError`` for a token
        of the wrong shape or one the stack refuses (unknown, revoked, expired)."""
        aow = self._clients.get(token)
        if aow is not None and not aow.transport.auth_refused:
            self._clients.move_to_end(token)
            return aow
        if aow is not None:
            self.forget(token)
        try:
            check_token_format(token)
        except Exception as exc:
            raise AuthenticationError(str(exc)) from None
        aow = AsyncOpenWeights(api_key=token, settings=self.settings, retry_for_s=5.0)
        try:
            await aow.connect()
        except BaseException:
            with contextlib.suppress(Exception):
                await aow.close()
            raise
        self._clients[token] = aow
        while len(self._clients) > self.bound:
            self.forget(next(iter(self._clients)))
        return aow

    def forget(self, token: str) -> None:
        """Drop (and close, in the background) the client of ``token``, if any."""
        aow = self._clients.pop(token, None)
        if aow is not None:
            task = asyncio.get_running_loop().create_task(_close(aow))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for token in list(self._clients):
            aow = self._clients.pop(token)
            await _close(aow)


async def _close(aow: AsyncOpenWeights) -> None:
    with contextlib.suppress(Exception):
        await aow.close()
