"""What goes into a job's working directory, what comes back out, and its output:
streamed live as it is printed and kept complete."""

from __future__ import annotations

import statistics
from pathlib import Path

import anyio
import nats
from pydantic import BaseModel

from openweights import Jobs, register
from openweights.config import Settings
from openweights.events import JobAssigned, JobCompleted
from openweights.subjects import Subjects

# Run in the job's working directory: the mounts are there, `uploads/` goes back.
WORKER_SIDE = """
cat data/input.txt inputs/a.txt inputs/sub/b.txt
mkdir -p uploads/nested/deeper
cp data/input.txt uploads/top.txt
cp inputs/sub/b.txt uploads/nested/deeper/b.txt
printf 'made by the job' > uploads/nested/made.txt
"""


class NoParams(BaseModel):
    pass


def test_mounted_file_and_directory_in_the_workdir_and_uploads_come_back(
        lab, tmp_path: Path) -> None:
    lab.start()
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "input.txt").write_text("the input file\n")
    (src / "dir" / "a.txt").write_text("a in the mounted dir\n")
    (src / "dir" / "sub" / "b.txt").write_text("b nested in the mounted dir\n")

    @register("files_roundtrip")
    class FilesRoundtrip(Jobs):
        mount = {str(src / "input.txt"): "data/input.txt", str(src / "dir"): "inputs"}
        params = NoParams
        requires_vram_gb = 0
        base_image = "dev"

        def get_entrypoint(self, p: NoParams) -> str:
            return WORKER_SIDE

    job = lab.ow.files_roundtrip.create()
    assert sorted(job.params["mounted_files"]) == [
        "data/input.txt", "inputs/a.txt", "inputs/sub/b.txt"]
    job.wait(timeout=60)
    assert job.status == "completed", job
    # Its outputs are the newest value of each key, as events.latest says (issue 21,
    # defect 5: they named the first upload, latest the last).
    assert job.outputs == lab.ow.events.latest("*", job_id=job.id)
    assert job.outputs["path"] == [e["data"]["path"] for e in lab.ow.events.list(
        job_id=job.id)][-1]
    run = job.runs[-1]
    assert run.logs().splitlines() == [
        "the input file", "a in the mounted dir", "b nested in the mounted dir"]

    out = tmp_path / "out"
    written = job.download(out)
    got = {p.relative_to(out).as_posix(): p.read_text() for p in written}
    assert got == {
        f"{run.id}.log": "the input file\na in the mounted dir\nb nested in the mounted dir\n",
        "top.txt": "the input file\n",
        "nested/deeper/b.txt": "b nested in the mounted dir\n",
        "nested/made.txt": "made by the job",
    }


TICKS = 20
TICKER = f"""python - <<'EOF'
import time
for i in range({TICKS}):
    print(f"tick {{i}} {{time.time():.6f}}", flush=True)
    time.sleep(0.05)
EOF"""


def publish_line(settings: Settings, subject: str, text: str) -> None:
    async def main() -> None:
        nc = await nats.connect(str(settings.nats_url))
        try:
            await nc.publish(subject, f"{text}\n".encode())
            await nc.flush()
        finally:
            await nc.close()

    anyio.run(main)


def test_a_live_subscriber_sees_each_line_within_100_ms(lab) -> None:
    lab.start()
    job = lab.submit(TICKER)
    lab.live.wait(lambda live: len([ln for ln in live.lines if ln.text.startswith("tick ")])
                  >= TICKS, timeout=60, what=f"{TICKS} ticks")
    assert job.wait(timeout=30).status == "completed"
    # A line on the run's own log subject after its end: stored, so republished, after
    # every line the run printed. Once it is here, nothing of the run is still coming.
    run = lab.live.wait_event(JobAssigned, 10, lambda e: e.job_id == job.id).event
    sentinel = "no line of the run comes after this one"
    publish_line(lab.settings, Subjects(lab.settings.namespace).log(
        lab.settings.default_org, run.run_id, run.worker_id), sentinel)
    lab.live.wait_line(sentinel, timeout=10)
    lines = lab.live.lines[:[ln.text for ln in lab.live.lines].index(sentinel)]
    latencies = []
    for line in lines:
        _, _, printed = line.text.split()
        latencies.append(line.received_at - float(printed))
    print(f"\nlog line latency: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
    assert [ln.text.split()[1] for ln in lines] == [str(i) for i in range(TICKS)]
    assert max(latencies) < 0.1


def test_the_full_log_holds_every_line_after_the_end(lab) -> None:
    lab.start()
    lines = [str(i) for i in range(1, 5001)] + ["last line, without a newline"]
    job = lab.submit("seq 1 5000; printf 'last line, without a newline'")
    assert job.wait(timeout=60).status == "completed"
    run_id = lab.live.wait_event(JobAssigned, 10, lambda e: e.job_id == job.id).event.run_id
    lab.sees(lab.live.wait_event(JobCompleted, 10, lambda e: e.job_id == job.id).seq)
    (run,) = lab.ow.runs.list(job_id=job.id)
    assert run.id == run_id and run.log_file is not None
    assert run.logs().splitlines() == lines
    # The live subscriber got them all too, once each and in order.
    live = lab.live.wait(lambda lv: (got := [ln.text for ln in lv.lines if ln.run_id == run_id])
                         and len(got) >= len(lines) and got, timeout=10, what="every line")
    assert live == lines
