from __future__ import annotations

from pathlib import Path

from openweights import OpenWeights


def test_upload_submit_retrieve(ow: OpenWeights, tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    f = ow.files.upload(data, purpose="conversations")
    assert f["id"].startswith("conversations:file-")
    assert ow.files.content(f["id"]) == data.read_bytes()
    job = ow.jobs.submit(id_prefix="customjob", script="echo hi", docker_image="img",
                         params={"training_file": f["id"]})
    assert job.status == "pending"
    again = ow.jobs.retrieve(job.id)
    assert again.id == job.id and again.params["training_file"] == f["id"]
    assert [j.id for j in ow.jobs.list()] == [job.id]
    assert [j.id for j in ow.jobs.find(training_file=f["id"])] == [job.id]
    assert ow.jobs.cancel(job.id).status == "canceled"
