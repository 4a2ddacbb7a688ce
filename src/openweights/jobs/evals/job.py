"""``ow.inspect_ai`` and ``ow.mmlu_pro`` as job types on every client: their params are
validated at submit (Inspect's options against an allowlist), their ids are
content-addressed, and their workers run in the vLLM worker environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from openweights.errors import InvalidRequest, NotFound
from openweights.images import WORKER_VLLM
from openweights.jobs.evals.config import EVAL_VRAM_GB, InspectAIConfig, MMLUProConfig
from openweights.jobs.training import BuiltinJobs
from openweights.sdk.custom import register
from openweights.sdk.jobs import AsyncJob

__all__ = ["TASK_FILE_PURPOSE", "InspectAI", "MMLUPro", "split_task_file"]

TASK_FILE_PURPOSE = "inspect_task"


def split_task_file(eval_name: str) -> tuple[Path, str] | None:
    """``(file, "@task" or "")`` when ``eval_name`` names a Python task file
    (``tasks.py`` or ``tasks.py@name``), else None (a registry name)."""
    path, at, task = eval_name.partition("@")
    if not path.endswith(".py"):
        return None
    return Path(path).expanduser(), f"{at}{task}"


@register("inspect_ai")
class InspectAI(BuiltinJobs):
    """``ow.inspect_ai.create(model, eval_name, max_model_len=8192, options=" ")``: an
    Inspect AI evaluation of ``model`` served by vLLM inside the job (params of
    :class:`InspectAIConfig`; ids ``inspectjob-…``). A local task file as ``eval_name``
    (``tasks.py[@task]``) is uploaded and runs in the job. The Inspect logs come back as
    result files; each scorer's metrics are a ``score`` event (``job.outputs``,
    ``ow.evals.results``)."""

    params = InspectAIConfig
    config = InspectAIConfig
    prefix = "inspectjob"
    worker_module = "openweights.jobs.evals.inspect_eval"
    base_image = WORKER_VLLM
    job_type = "custom"
    names_model = False

    async def create(self, **params: Any) -> AsyncJob:
        """Submit the evaluation; see :meth:`BuiltinJobs.create` for the options.
        ``deployment`` may be an up ``ow.api`` deployment (``TemporaryApi``) or its job
        id: the job then evaluates against it (keep it up until the job ends). Raises
        ``InvalidRequest`` naming a refused option, a missing task file or a deployment
        that does not serve ``model``."""
        deployment = params.get("deployment")
        if deployment is not None and not isinstance(deployment, str):
            job_id = getattr(deployment, "job_id", None)
            if not job_id:
                raise InvalidRequest("deployment is not up: evaluate inside `with api:` "
                                     "(or after api.up())")
            params["deployment"] = job_id
        return await super().create(**params)

    def guess_vram(self, validated: BaseModel) -> int:
        return 0 if getattr(validated, "deployment", None) else EVAL_VRAM_GB

    async def _upload_datasets(self, dumped: dict[str, Any]) -> dict[str, Any]:
        if dumped.get("deployment"):
            dumped.update(await self._endpoint(dumped["deployment"], dumped["model"]))
        found = split_task_file(dumped["eval_name"])
        if found is None:
            return dumped
        path, task = found
        if not path.is_file():
            raise InvalidRequest(f"eval_name {dumped['eval_name']!r} names a task file, but "
                                 f"{str(path)!r} is not a file here: give its path, or a "
                                 "registry name such as inspect_evals/gpqa_diamond")
        info = await self.client.files.upload(path, TASK_FILE_PURPOSE)
        dumped["task_file"] = info["id"]
        dumped["eval_name"] = path.name + task
        return dumped

    async def _endpoint(self, job_id: str, model: str) -> dict[str, str]:
        """``{"base_url", "api_key"}`` of the running deployment ``job_id`` serving
        ``model``. Raises ``InvalidRequest``."""
        try:
            job = await self.client.jobs.retrieve(job_id)
        except NotFound:
            raise InvalidRequest(f"deployment {job_id!r} not found (give an ow.api "
                                 "deployment or its apijob- id)") from None
        served = job.params.get("validated_params") or {}
        if job.type != "api" or job.status != "in_progress":
            raise InvalidRequest(f"deployment {job_id!r} is a {job.status} {job.type} job, "
                                 "not a running ow.api deployment: deploy it first")
        if model not in [served.get("model"), *served.get("lora_adapters", [])]:
            raise InvalidRequest(f"deployment {job_id!r} does not serve {model!r} (it serves "
                                 f"{served.get('model')!r} and its adapters)")
        client: Any = self.client  # an AsyncOpenWeights: it has events
        ready = [e["data"] for e in await client.events.list(job_id=job_id)
                 if e["data"].get("type") == "api_ready"]
        if not ready or "api_key" not in served:
            raise InvalidRequest(f"deployment {job_id!r} is not ready yet: evaluate once "
                                 "it is up (inside `with api:`)")
        return {"base_url": str(ready[-1]["url"]), "api_key": str(served["api_key"])}


@register("mmlu_pro")
class MMLUPro(BuiltinJobs):
    """``ow.mmlu_pro.create(model, ntrain=5, selected_subjects="all", ...)``: MMLU-Pro's
    chain-of-thought few-shot evaluation on vLLM (params of :class:`MMLUProConfig`; ids
    ``mmlujob-…``). Per-subject and overall accuracy are a ``score`` event and the
    files ``uploads/`` holds (per-subject JSON, summary, CSV record)."""

    params = MMLUProConfig
    config = MMLUProConfig
    prefix = "mmlujob"
    worker_module = "openweights.jobs.evals.mmlu_pro"
    base_image = WORKER_VLLM
    job_type = "custom"
    names_model = False

    def guess_vram(self, validated: BaseModel) -> int:
        return EVAL_VRAM_GB

    async def _upload_datasets(self, dumped: dict[str, Any]) -> dict[str, Any]:
        return dumped
