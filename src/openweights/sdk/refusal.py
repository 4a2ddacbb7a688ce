"""The SDK asks why its token was refused (:mod:`openweights.refusal`).

nats-server says only "Authorization Violation"; one short extra connection under the
reason connection's name asks the api, which tells an unknown, a revoked and an expired
token apart. A stack that cannot answer (an older api, a callout that is down) leaves
the caller with its generic message.
"""

from __future__ import annotations

import contextlib
import json

import msgspec
import nats
from nats.aio.client import Client

from openweights.errors import AuthenticationError
from openweights.refusal import REFUSAL_CONNECTION, Refusal, error_for, inbox_prefix
from openweights.subjects import Subjects
from openweights.tokens import token_id

_decode = msgspec.json.Decoder(Refusal)


async def why_refused(url: str, token: str, subjects: Subjects,
                      timeout_s: float) -> AuthenticationError | None:
    """The error that says why ``token`` is refused, or None if nobody said."""
    tid = token_id(token)

    async def quiet(exc: Exception) -> None:
        """An error here only means no reason: the caller has its own message."""

    nc: Client | None = None
    try:
        nc = await nats.connect(url, name=REFUSAL_CONNECTION, token=token,
                                inbox_prefix=inbox_prefix(tid).encode(),
                                allow_reconnect=False, connect_timeout=timeout_s,
                                error_cb=quiet)
        reply = await nc.request(subjects.refusal(tid), json.dumps({"token": token}).encode(),
                                 timeout=timeout_s)
        refusal = _decode.decode(reply.data)
    except Exception:  # any failure of this side channel: no reason to give
        return None
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
    return error_for(refusal) if refusal.token_id == tid else None
