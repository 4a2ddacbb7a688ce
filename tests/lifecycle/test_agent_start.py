"""How an agent starts a run: the org's secrets come with the start, and an agent whose
copy of them is current starts the command while the api confirms the start; a start
the api refuses stops the command and reports nothing."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import nats

from openweights.api.protocol import Assignment
from openweights.events import JobCompleted, RunStarted
from openweights.secretbox import new_key
from openweights.services.agent.runs import QUICK_JOB_S
from openweights.services.testing.stack import services_thread
from openweights.subjects import Subjects


def test_each_job_sees_the_org_secrets_current_when_it_starts(lab) -> None:
    lab.configure(max_workers=1, secret_key=new_key())
    lab.start()
    lab.ow.secrets.set(OW_TEST_SECRET="one")
    first = lab.submit('echo "first=$OW_TEST_SECRET"')
    assert first.wait(timeout=60).status == "completed"
    lab.ow.secrets.set(OW_TEST_SECRET="two")  # the agent's copy is now stale
    second = lab.submit('echo "second=$OW_TEST_SECRET"')
    assert second.wait(timeout=60).status == "completed"
    third = lab.submit('echo "third=$OW_TEST_SECRET"')  # its copy is current again
    assert third.wait(timeout=60).status == "completed"

    for job, line in ((first, "first=one"), (second, "second=two"), (third, "third=two")):
        (run,) = lab.ow.runs.list(job_id=job.id)
        assert run.logs() == f"{line}\n"
    workers = {s.event.worker_id for s in lab.live.of(RunStarted)}
    assert len(workers) == 1, "one agent ran the three jobs"


def test_a_refused_start_stops_the_command_and_reports_nothing(lab, tmp_path: Path,
                                                                alive) -> None:
    lab.configure(max_workers=1)
    lab.start("projector", "scheduler", "provisioner")
    with services_thread(lab.settings, ("api",)):  # stopped below, then started again
        done = lab.submit("true")
        assert done.wait(timeout=60).status == "completed"  # the agent holds the secrets
    (started,) = lab.live.of(RunStarted)
    worker_id = started.event.worker_id

    # An assignment the log never made (a run id unknown to the job), with the secrets
    # version the agent holds, while the api is away: the agent starts the command at
    # once, and keeps asking the api to confirm the start.
    pidfile = tmp_path / "pid"
    bogus = Assignment(org="default", job_id=done.id, run_id="run-0000000000000000",
                       worker_id=worker_id, script=f"echo $$ > {pidfile}; echo started; "
                       "sleep 60", docker_image="dev", model=None, params={}, secrets_seq=0)

    async def send_and_see_it_start() -> None:
        subjects = Subjects(lab.settings.namespace)
        nc = await nats.connect(str(lab.settings.nats_url))
        try:
            # The agent's own output subject: with the api away, no log gate stores or
            # republishes its lines, but the agent still sends them.
            lines = await nc.subscribe(subjects.log("default", bogus.run_id, worker_id))
            await nc.publish(subjects.agent("default", worker_id), msgspec.json.encode(bogus))
            await nc.flush()
            with anyio.fail_after(15):  # it started without waiting for the api
                while (await lines.next_msg(timeout=15)).data != b"started\n":
                    pass
        finally:
            await nc.close()

    anyio.run(send_and_see_it_start)
    pid = int(pidfile.read_text())

    # The api is back and refuses. The agent runs one job at a time: the next job
    # completing means the refused run ended, and a run ends once its processes are gone.
    with services_thread(lab.settings, ("api",)):
        after = lab.submit("true")
        assert after.wait(timeout=60).status == "completed"
    assert not alive(pid), "the refused command kept running"
    runs = [s.event.run_id for s in lab.read("job") if hasattr(s.event, "run_id")]
    assert bogus.run_id not in runs, "something was appended for the refused run"
    assert len(lab.live.of(JobCompleted)) == 2


def test_a_quick_job_reports_its_start_with_its_end_a_slow_one_before(lab) -> None:
    lab.configure(max_workers=1)
    lab.start()
    first = lab.submit("true")  # the agent learns the secrets' version: a confirmed start
    assert first.wait(timeout=60).status == "completed"
    quick = lab.submit("true")
    slow = lab.submit(f"sleep {QUICK_JOB_S * 6}")  # well past the linger
    assert quick.wait(timeout=60).status == "completed"
    assert slow.wait(timeout=60).status == "completed"

    def seqs(job_id: str) -> dict[str, int]:
        return {s.event.tag: s.seq for s in lab.read("job", job_id)}

    quick_seqs, slow_seqs = seqs(quick.id), seqs(slow.id)
    # One append carries both: one message, one sequence.
    assert quick_seqs["run.started/1"] == quick_seqs["job.completed/1"]
    assert slow_seqs["run.started/1"] < slow_seqs["job.completed/1"]
    lab.sees(max(slow_seqs.values()))
    for job in (quick, slow):
        (run,) = lab.ow.runs.list(job_id=job.id)
        assert run.status == "completed" and run.started_at is not None
