"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against the real services of a two-organization, auth-enabled world (the
tenancy tests' ``open_world``) with the scheduler and the local provisioner, so jobs
really run on local agents. The dashboard is served by uvicorn in a thread, on a socket
bound and listening before the test begins, so nothing waits for it to start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from openweights.services.testing.dashboard import serve_dashboard
from openweights.services.testing.stack import services_thread
from tests.tenancy import conftest as tenancy
from tests.tenancy.conftest import World, open_world

auth_nats = tenancy.auth_nats  # the tenancy tests' auth-callout nats-server (a fixture)

CHROMIUM = os.environ.get("OW_TEST_CHROMIUM", "/usr/bin/chromium")


@dataclass
class Dash:
    world: World
    url: str
    browser: Browser

    def page(self) -> Page:
        context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        return page

    def signed_in(self, token_name: str) -> Page:
        page = self.page()
        page.goto(f"{self.url}/signin")
        page.fill("#token", self.world.tokens.get(token_name, token_name))
        page.click("button[type=submit]")
        page.wait_for_url(f"{self.url}/jobs")
        return page


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium. Playwright's sync API holds an event loop on this thread while
    it runs, so it starts after (and stops before) what calls ``anyio.run`` here."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the dashboard tests need Chromium at {CHROMIUM}: apt-get install -y "
                    "chromium (.ci/run does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def dash(auth_nats: Any, postgres_url: str, tmp_path: Path) -> Iterator[Dash]:
    with open_world(auth_nats, postgres_url, tmp_path) as world:
        fast = world.settings.model_copy(update={
            "heartbeat_s": 0.5, "scheduler_check_s": 0.5, "provisioner_check_s": 0.5,
            "cancel_grace_s": 2.0})
        with services_thread(fast, ("scheduler", "provisioner")), \
                serve_dashboard(world.client_settings) as url, chromium() as browser:
            yield Dash(world, url, browser)
