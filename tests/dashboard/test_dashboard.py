"""The dashboard in a browser: sign in, watch a job live, cancel one, tenancy, expiry."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import expect

from tests.dashboard.conftest import Dash


def loss_job(gate: Path, before: int = 5, after: int = 5) -> str:
    """A job that prints and logs ``before`` loss points, waits for ``gate`` to exist (the
    test creates it once the page shows them), then ``after`` more and a JSONL result."""
    return f"""python - <<'PY'
import json, math, os, time
from openweights import OpenWeights
ow = OpenWeights()
rows = []
def step(i):
    loss = round(2.5 * math.exp(-i / 4) + 0.1, 4)
    rows.append({{"step": i, "loss": loss, "text": f"sample {{i}}"}})
    print(f"step {{i}} loss {{loss}}", flush=True)
    ow.run.log({{"step": i, "loss": loss, "learning_rate": 1e-4 * (1 - i / 20)}})
for i in range({before}):
    step(i)
while not os.path.exists({str(gate)!r}):
    time.sleep(0.05)
for i in range({before}, {before + after}):
    step(i)
os.makedirs("uploads", exist_ok=True)
with open("uploads/samples.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\\n" for r in rows)
PY
"""


def test_sign_in_and_watch_a_job_log_and_plot_live(dash: Dash, tmp_path: Path) -> None:
    a = dash.world.ow("a_admin")
    page = dash.signed_in("a_admin")
    expect(page.locator("header .who")).to_contain_text("orgA")
    gate = tmp_path / "gate"
    job = a.jobs.submit(id_prefix="curve", script=loss_job(gate), docker_image="python")
    page.goto(f"{dash.url}/jobs")
    expect(page.locator(f"#job-{job.id}")).to_be_visible()
    page.click(f"a[href='/jobs/{job.id}']")
    log = page.locator("#log")
    # The first half arrives while the job is still running (it waits on the gate)...
    expect(log).to_contain_text("step 4 loss", timeout=60_000)
    page.wait_for_function("window.owPoints.loss === 5 && window.owPoints.learning_rate === 5")
    expect(page.locator("#job-status")).to_have_text("in_progress")
    assert a.jobs.retrieve(job.id).status == "in_progress"
    assert "step 5" not in log.inner_text()
    gate.touch()
    # ...and the rest on the same open page, without a reload.
    expect(log).to_contain_text("step 9 loss")
    page.wait_for_function("window.owPoints.loss === 10")
    expect(page.locator("[data-metric=loss]")).to_have_attribute("data-points", "10")
    expect(page.locator("[data-metric=loss] canvas")).to_have_count(1)
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#timeline")).to_contain_text("job.completed/1")
    expect(page.locator("#timeline")).to_contain_text(f"client:{dash.world.tid('a_admin')}")
    expect(page.locator("#runs-body")).to_contain_text("completed")  # reloaded live
    with page.expect_download() as download:  # the run's stored log, as a file
        page.click("#runs-body a:has-text('download')")
    assert "step 9 loss" in Path(download.value.path()).read_text()
    # The returned JSONL reads as a table.
    page.click("#files a:has-text('view as table')")
    expect(page.locator("#records thead")).to_contain_text("loss")
    expect(page.locator("#records tbody tr")).to_have_count(10)
    expect(page.locator("#records")).to_contain_text("sample 9")


def test_cancel_a_job_from_its_page(dash: Dash) -> None:
    a = dash.world.ow("a_admin")
    job = a.jobs.submit(id_prefix="long", script="echo started; exec sleep 600",
                        docker_image="python")
    page = dash.signed_in("a_admin")
    page.goto(f"{dash.url}/jobs/{job.id}")
    expect(page.locator("#log")).to_contain_text("started", timeout=60_000)
    page.click("#cancel")
    expect(page.locator("#job-status")).to_have_text("canceled")
    expect(page.locator("#restart")).to_be_enabled()
    assert a.jobs.retrieve(job.id).status == "canceled"
    expect(page.locator("#timeline")).to_contain_text("job.canceled/1")


def test_org_b_cannot_see_or_open_org_a_jobs(dash: Dash) -> None:
    a = dash.world.ow("a_admin")
    job_a = a.jobs.submit(id_prefix="secret-a", script="echo a", docker_image="img",
                          model="org-a/private-model")
    b = dash.world.ow("b_admin")
    job_b = b.jobs.submit(id_prefix="mine-b", script="echo b", docker_image="img")
    page = dash.signed_in("b_admin")
    expect(page.locator(f"#job-{job_b.id}")).to_be_visible()
    expect(page.locator("table.jobs")).not_to_contain_text(job_a.id)
    page.fill("#q", "private-model")  # a search finds nothing of A's either
    expect(page.locator("table.jobs")).to_contain_text("No jobs match")
    for path in (f"/jobs/{job_a.id}", f"/jobs/{job_a.id}/../{job_a.id}"):
        response = page.goto(f"{dash.url}{path}")
        assert response is not None and response.status == 404
        expect(page.locator("#error-message")).to_contain_text(f"job {job_a.id!r} not found")
        assert "Traceback" not in page.content()
    for stream in ("events", "logs"):
        response = page.goto(f"{dash.url}/live/jobs/{job_a.id}/{stream}")
        assert response is not None and response.status == 404
    # A post with B's own session cannot cancel A's job: the api does not find it.
    page.goto(f"{dash.url}/jobs/{job_b.id}")
    with page.expect_navigation():
        page.evaluate(f"const f = document.querySelector('form[action$=\"/cancel\"]'); "
                      f"f.action = '/jobs/{job_a.id}/cancel'; f.submit()")
    expect(page.locator("#error-message")).to_contain_text("not found")
    assert a.jobs.retrieve(job_a.id).status != "canceled"


def test_an_expired_token_is_sent_back_to_sign_in(dash: Dash) -> None:
    a = dash.world.ow("a_admin")
    short = a.tokens.create("short-lived", expires_in_s=60)
    page = dash.signed_in(short["token"])
    expect(page.locator("h1")).to_have_text("Jobs")
    dash.world.clock.advance(61)  # the services' clock: past the token's expiry
    page.goto(f"{dash.url}/workers")
    expect(page).to_have_url(re.compile(r"/signin\?"))
    expect(page.locator("#why")).to_contain_text("revoked or has expired")
    # The cookie is gone: the next page asks to sign in again, and the token cannot.
    page.goto(f"{dash.url}/jobs")
    expect(page).to_have_url(re.compile(r"/signin\?"))
    page.fill("#token", short["token"])
    page.click("button[type=submit]")
    expect(page.locator("#why")).to_contain_text("expired")


def test_bad_input_gets_a_page_that_says_what_happened(dash: Dash) -> None:
    page = dash.page()
    response = page.goto(f"{dash.url}/jobs")
    assert response is not None and page.url.startswith(f"{dash.url}/signin")
    page.fill("#token", "ow_not-a-token")
    page.click("button[type=submit]")
    expect(page.locator("#why")).to_contain_text("48 hex")
    page = dash.signed_in("a_user")
    for path, code, says in (("/jobs/no-such-job-000000000000", 404, "not found"),
                             ("/jobs/a.b", 400, "is not usable"),
                             ("/jobs?status=bogus", 400, "status 'bogus'"),
                             ("/files/blob:file-000000000000/view", 404, "not found"),
                             ("/nowhere", 404, "no page"),
                             ("/tokens", 403, "admin token")):
        response = page.goto(f"{dash.url}{path}")
        assert response is not None and response.status == code, path
        expect(page.locator("#error-message")).to_contain_text(says)
        assert "Traceback" not in page.content()
