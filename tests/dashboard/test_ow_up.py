"""`ow up` serves the dashboard at the URL it prints, as a client without privileges."""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psutil
import pytest

from tests.e2e import test_up
from tests.e2e.test_up import UP_S, Up

home = test_up.home  # a fresh OW_HOME outside pytest's basetemp (a fixture)

pytestmark = pytest.mark.timeout(240)


def test_ow_up_prints_the_dashboards_url_and_it_signs_in_with_the_admin_token(
        home: Path) -> None:
    up = Up(home)
    try:
        up.started()
        line = up.wait_for("Dashboard:", UP_S)  # 127.0.0.1:8124 unless another has it
        port = urlsplit(line.split()[1]).port
        assert port is not None and str(home / "admin.token") in line, line
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/signin")
        signin = conn.getresponse()
        assert signin.status == 200 and b'name="token"' in signin.read()
        token = (home / "admin.token").read_text().strip()
        conn.request("POST", "/signin", urlencode({"token": token, "next": "/jobs"}),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        assert response.status == 303 and response.getheader("location") == "/jobs"
        cookie = response.getheader("set-cookie") or ""
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie, cookie
        conn.request("GET", "/jobs", headers={"Cookie": cookie.split(";")[0]})
        page = conn.getresponse()
        assert page.status == 200 and b"<h1>Jobs</h1>" in page.read()
        # It holds no credentials but its users': no database, key or service user.
        env = psutil.Process(up.services()["dashboard"]).environ()
        assert not {"OW_DATABASE_URL", "OW_SECRET_KEY", "OW_NATS_AUTH_FILE"} & set(env)
        assert "svc" not in env["OW_NATS_URL"] and env["OW_NATS_URL"] == up.stack()["nats_url"]
    finally:
        up.stop()
