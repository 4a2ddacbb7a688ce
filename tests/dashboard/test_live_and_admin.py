"""Live streams resume after a reconnect without losing or repeating anything; the job
list's statuses change live; admins create (shown once) and revoke tokens and set and
remove secrets (names only); users see secret names and change nothing."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import expect

from tests.dashboard.conftest import Dash

TICKER = "for i in $(seq 1 12); do echo \"line $i\"; done"
LOGGER = """python - <<'PY'
from openweights import OpenWeights
ow = OpenWeights()
for i in range(12):
    ow.run.log({"step": i, "loss": 1.0 / (i + 1)})
PY
"""


def sse_events(dash: Dash, cookie: str, path: str, until: str,
               last_id: str | None = None) -> list[tuple[str | None, str, Any]]:
    """``(id, event, data)`` of the stream at ``path`` up to the first ``until`` event."""
    url = urlsplit(dash.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    headers = {"Cookie": f"ow_token={cookie}", "Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    assert response.status == 200, response.read()[:500]
    out: list[tuple[str | None, str, Any]] = []
    fields: dict[str, str] = {}
    try:
        while True:
            line = response.readline().decode().rstrip("\n")
            if line == "":
                if "event" in fields:
                    out.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
                    if fields["event"] == until:
                        return out
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    finally:
        conn.close()


def test_log_and_event_streams_resume_after_the_last_id_they_sent(dash: Dash) -> None:
    a = dash.world.ow("a_admin")
    token = dash.world.tokens["a_admin"]
    job = a.jobs.submit(id_prefix="resume", script=TICKER, docker_image="python")
    assert job.wait(timeout=60).status == "completed"
    first = sse_events(dash, token, f"/live/jobs/{job.id}/logs", until="run_ended")
    lines = [(i, d) for i, e, d in first if e == "line"]
    text = "".join(d for _, d in lines)
    assert text == "".join(f"line {n}\n" for n in range(1, 13))
    # Reconnecting after any chunk gives exactly the rest: nothing lost, nothing twice.
    for cut in range(len(lines)):
        again = sse_events(dash, token, f"/live/jobs/{job.id}/logs", until="run_ended",
                           last_id=lines[cut][0])
        assert [(i, d) for i, e, d in again if e == "line"] == lines[cut + 1:]
        assert not [e for _, e, _ in again if e == "run"]  # the same run goes on
    points_job = a.jobs.submit(id_prefix="resume-points", script=LOGGER, docker_image="python")
    assert points_job.wait(timeout=60).status == "completed"
    path = f"/live/jobs/{points_job.id}/events"
    events = sse_events(dash, token, path, until="status", last_id="999999999.0")
    assert [e for _, e, _ in events] == ["status"]  # nothing after a position past the end
    whole = _until_completed(dash, token, path, None)
    points = [(i, d["data"]["loss"]) for i, e, d in whole if e == "point"]
    assert [round(1 / loss) for _, loss in points] == list(range(1, 13))
    for cut in (0, 5, 11):
        rest = _until_completed(dash, token, path, points[cut][0])
        assert [(i, d["data"]["loss"]) for i, e, d in rest if e == "point"] == points[cut + 1:]


def _until_completed(dash: Dash, token: str, path: str,
                     last_id: str | None) -> list[tuple[str | None, str, Any]]:
    """Events of the job's stream up to the audit entry of its completion."""
    out: list[tuple[str | None, str, Any]] = []
    for item in sse_events(dash, token, path, until="audit", last_id=last_id):
        out.append(item)
    while out[-1][2].get("event") != "job.completed/1":
        out += sse_events(dash, token, path, until="audit", last_id=out[-1][0])
    return out


def test_the_job_list_shows_status_changes_live(dash: Dash) -> None:
    a = dash.world.ow("a_admin")
    job = a.jobs.submit(id_prefix="listlive", script="echo hi; exec sleep 600",
                        docker_image="python")
    page = dash.signed_in("a_admin")
    cell = page.locator(f"#job-{job.id} [data-field=status]")
    expect(cell).to_have_text(re.compile("pending|in_progress"))
    a.jobs.cancel(job.id)
    expect(cell).to_have_text("canceled")  # no reload: the list's stream said so


def test_admins_manage_tokens_and_secrets_and_users_may_not(dash: Dash) -> None:
    a = dash.world.ow("a_admin")
    page = dash.signed_in("a_admin")
    page.goto(f"{dash.url}/tokens")
    page.fill("input[name=name]", "from-the-dashboard")
    page.click("text=Create token")
    shown = page.locator("#new-token-value").inner_text().strip()
    assert re.fullmatch(r"ow_[0-9a-f]{48}", shown)
    assert dash.world.ow(shown).jobs.list() == []  # a working token of org A
    page.goto(f"{dash.url}/tokens")
    expect(page.locator("#new-token-value")).to_have_count(0)  # shown once only
    assert shown not in page.content()
    made = next(t for t in a.tokens.list() if t["name"] == "from-the-dashboard")
    page.locator(f"form[action='/tokens/{made['id']}/revoke'] button").click()
    expect(page.locator(f"form[action='/tokens/{made['id']}/revoke']")).to_have_count(0)
    assert {t["id"]: t["status"] for t in a.tokens.list()}[made["id"]] == "revoked"
    page.goto(f"{dash.url}/secrets")
    page.fill("input[name=name]", "DASH_SECRET")
    page.fill("input[name=value]", "value-never-shown")
    page.click("text=Set")
    expect(page.locator("#secrets")).to_contain_text("DASH_SECRET")
    assert "value-never-shown" not in page.content()
    assert a.secrets.show()["DASH_SECRET"] == "value-never-shown"
    page.locator("form[action='/secrets/DASH_SECRET/remove'] button").click()
    expect(page.locator("#secrets")).not_to_contain_text("DASH_SECRET")
    # A form without this session's CSRF token changes nothing.
    page.evaluate("document.querySelector(\"form[action='/secrets'] input[name=csrf]\")"
                  ".value = 'forged'")
    page.fill("input[name=name]", "FORGED")
    page.click("text=Set")
    expect(page.locator("#error-message")).to_contain_text("not from this session")
    assert "FORGED" not in a.secrets.list()
    user = dash.signed_in("a_user")
    response = user.goto(f"{dash.url}/tokens")
    assert response is not None and response.status == 403
    expect(user.locator("#error-message")).to_contain_text("admin token")
    user.goto(f"{dash.url}/secrets")  # a user sees the names, and cannot change them
    expect(user.locator("header nav")).not_to_contain_text("Tokens")
    expect(user.locator("main")).to_contain_text("needs an admin token")
    expect(user.locator("form[action='/secrets']")).to_have_count(0)
    csrf = user.locator("header input[name=csrf]").get_attribute("value")
    posted = user.request.post(f"{dash.url}/secrets", form={"csrf": csrf or "",
                                                             "name": "BY_USER", "value": "x"})
    assert posted.status == 403 and "admin token" in posted.text()
    assert "BY_USER" not in a.secrets.list()
