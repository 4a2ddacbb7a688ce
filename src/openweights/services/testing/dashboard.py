"""The dashboard served by uvicorn in a thread, for the browser tests and the bench.

Its socket is bound and listening before this returns, so a browser can connect at
once (uvicorn accepts what queued meanwhile): nothing waits for the server to start.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from openweights.config import Settings
from openweights.services.dashboard.__main__ import client_settings
from openweights.services.dashboard.app import create_app


@contextmanager
def serve_dashboard(settings: Settings) -> Iterator[str]:
    """The dashboard for ``settings``' token holders, at the URL this yields."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(client_settings(settings)),
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                              name="ow-dashboard", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
