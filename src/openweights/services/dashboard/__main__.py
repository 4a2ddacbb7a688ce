"""``python -m openweights.services.dashboard``: serve the dashboard with uvicorn.

It connects to NATS as its users do (``OW_CLIENT_NATS_URL``, else ``OW_NATS_URL``), with
each signed-in token: give it no service credentials (`ow up` gives it none).
"""

from __future__ import annotations

import structlog
import uvicorn

from openweights.config import Settings
from openweights.logs import configure_logging
from openweights.services.dashboard.app import create_app


def client_settings(settings: Settings) -> Settings:
    """What a token holder's client needs: the plain URL; no database, no keys."""
    return settings.model_copy(update={
        "nats_url": settings.client_nats_url or settings.nats_url, "client_nats_url": None,
        "database_url": None, "secret_key": None, "nats_auth_file": None})


def main() -> None:
    settings = Settings()
    configure_logging(json=settings.log_json)
    url = f"http://{settings.dashboard_host}:{settings.dashboard_port}"
    structlog.get_logger("dashboard").info("dashboard.serving", url=url)
    uvicorn.run(create_app(client_settings(settings)), host=settings.dashboard_host,
                port=settings.dashboard_port, log_level="warning", access_log=False,
                lifespan="on")


if __name__ == "__main__":
    main()
