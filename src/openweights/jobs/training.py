"""What the built-in job classes share at submit: submission options, VRAM guesses,
local datasets uploaded with the purpose their param needs, and the finetuned model id.

Everything a job's params can get wrong is refused before anything is stored: the
params (pydantic), the model id template, then the datasets (an upload validates each
row and names the line at fault). A dataset given by file id must have the purpose its
param needs; its rows were checked when it was uploaded.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from openweights.errors import InvalidRequest
from openweights.images import WORKER_UNSLOTH
from openweights.jobs.common import (
    CONVERSATIONS,
    JOB_ID_PLACEHOLDER,
    PREFERENCE,
    check_repo_id,
    format_model_id,
    purpose_of,
)
from openweights.sdk.custom import Jobs
from openweights.sdk.jobs import AsyncJob

__all__ = ["BuiltinJobs", "guess_vram_gb", "model_size_b"]

# What the original's create() took besides params; accepted so its calls run unchanged.
_IGNORED = ("cloud_type",)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")
DEFAULT_VRAM_GB = 24  # the original's fine-tuning default, for a model of unknown size


def model_size_b(model: str) -> float | None:
    """Billions of parameters, as the model's name says (``Qwen3-4B`` → 4), else None."""
    sizes = [float(m) for m in _SIZE.findall(model.split("/")[-1])]
    return max(sizes) if sizes else None


def guess_vram_gb(model: str, *, load_in_4bit: bool = False, overhead_gb: float = 6.0) -> int:
    """GPU memory a LoRA run of ``model`` needs: 16-bit weights (a quarter in 4-bit) plus
    half as much again for activations, LoRA and optimizer state, plus ``overhead_gb``.
    A model whose name has no size gets the original's default (24)."""
    size = model_size_b(model)
    if size is None:
        return DEFAULT_VRAM_GB
    weights = 2 * size / (4 if load_in_4bit or "4bit" in model.lower() else 1)
    return math.ceil(weights * 1.5 + overhead_gb)


class BuiltinJobs(Jobs):
    """A built-in job type: validated params (``config``), datasets checked by purpose,
    its worker module run in its image's environment."""

    config: ClassVar[type[BaseModel]]
    prefix: ClassVar[str]
    worker_module: ClassVar[str]
    base_image = WORKER_UNSLOTH
    job_type = "fine-tuning"
    # Dataset params and the purposes each accepts: (name, purposes) for a top-level
    # param; logp_callback_datasets and sampling_callbacks are walked by _datasets.
    names_model: ClassVar[bool] = True  # it has a finetuned_model_id to fill

    @property
    def id_prefix(self) -> str:
        return self.prefix

    def get_entrypoint(self, validated_params: Any) -> str:
        return f"python -m {self.worker_module}"

    def purposes(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The purposes ``training_file``/``test_file`` may have."""
        return PREFERENCE if params.get("loss") in ("dpo", "orpo") else CONVERSATIONS

    def guess_vram(self, validated: BaseModel) -> int:
        return guess_vram_gb(str(getattr(validated, "model", "")),
                             load_in_4bit=bool(getattr(validated, "load_in_4bit", False)))

    async def create(self, **params: Any) -> AsyncJob:
        """Submit the job; the same params again return the same job (``ftjob-…`` ids are
        content-addressed). Options: ``requires_vram_gb`` (``"guess"``, the default, guesses
        from the model's name; with ``allowed_hardware`` it is 0 unless given),
        ``allowed_hardware``, ``docker_image`` (or the original's ``base_image``),
        ``timeout`` (seconds). A dataset may be a file id or a local path (uploaded with
        the purpose its param needs). Raises ``InvalidRequest`` naming the param or, for
        a dataset, the line at fault; nothing is stored then."""
        for name in _IGNORED:
            params.pop(name, None)
        hardware = params.pop("allowed_hardware", None)
        image = params.pop("docker_image", None) or params.pop("base_image", None) \
            or self.base_image
        params.pop("base_image", None)
        vram = params.pop("requires_vram_gb", "guess")
        timeout = params.pop("timeout", None)
        validated = self._validate(params)
        if vram == "guess":
            vram = 0 if hardware else self.guess_vram(validated)
        dumped = validated.model_dump(mode="json")
        fill = await self._name_model(dumped) if self.names_model else []
        dumped = await self._upload_datasets(dumped)
        validated = self._validate(dumped)  # the ids now in place of paths
        return await self.client.jobs.submit(
            id_prefix=self.prefix, type=self.job_type, model=dumped.get("model"),
            params={"validated_params": dumped, "mounted_files": {}},
            script=self.get_entrypoint(validated), docker_image=image,
            requires_vram_gb=vram, allowed_hardware=hardware, timeout=timeout,
            job_id_suffix=dumped.get("job_id_suffix"), fill_job_id=fill)

    async def _name_model(self, dumped: dict[str, Any]) -> list[str]:
        """Fill ``finetuned_model_id``'s fields but the job id (the service fills that
        once the id is known); returns the params it fills. Raises ``InvalidRequest``."""
        await self.client.connect()  # hf_org and the organization are known once connected
        org = self.client.hf_org or _repo_part(self.client.org_name or
                                               self.client.organization_id)
        try:
            named = format_model_id(dumped["finetuned_model_id"], org_id=org,
                                    model=dumped["model"], params=dumped,
                                    extra=dumped.get("model_naming_extra_parameters"))
            if dumped.get("ft_id_suffix"):
                named += f"-{dumped['ft_id_suffix']}"
            check_repo_id(named.replace(JOB_ID_PLACEHOLDER, f"{self.prefix}-0123456789ab"))
        except ValueError as exc:
            raise InvalidRequest(f"invalid finetuned_model_id: {exc}") from None
        dumped["finetuned_model_id"] = named
        return ["validated_params.finetuned_model_id"] if JOB_ID_PLACEHOLDER in named else []

    async def _upload_datasets(self, dumped: dict[str, Any]) -> dict[str, Any]:
        """``dumped`` with every dataset given by path replaced by its uploaded file's id
        (each upload checks its rows). Every path is checked to exist before the first
        upload, so a missing one stores nothing."""
        slots = list(_dataset_slots(dumped, self.purposes(dumped)))
        for where, value, _ in slots:
            if purpose_of(value) is None and not Path(value).expanduser().is_file():
                raise InvalidRequest(f"{where} {value!r} is neither a file id nor a file "
                                     "here: upload it first (ow.files.upload) or give its path")
        for where, value, purposes in slots:
            if purpose_of(value) is None:
                info = await self.client.files.upload(Path(value).expanduser(), purposes[0])
                _set(dumped, where, info["id"])
        return dumped


def _repo_part(name: str) -> str:
    """``name`` as the org part of a model id (letters, digits, ``-``, ``_``, ``.``)."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]", "-", name)).strip("-.") or "local"


def _dataset_slots(dumped: dict[str, Any],
                   purposes: tuple[str, ...]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(where, value, purposes) of every dataset param of ``dumped``."""
    out = [(key, dumped[key], purposes) for key in ("training_file", "test_file")
           if isinstance(dumped.get(key), str)]
    if isinstance(dumped.get("dataset"), str):
        out.append(("dataset", dumped["dataset"], CONVERSATIONS))
    for tag, value in (dumped.get("logp_callback_datasets") or {}).items():
        out.append((f"logp_callback_datasets.{tag}", value, CONVERSATIONS))
    for i, callback in enumerate(dumped.get("sampling_callbacks") or []):
        out.append((f"sampling_callbacks.{i}.dataset", callback["dataset"], CONVERSATIONS))
    return out


def _set(dumped: dict[str, Any], where: str, value: str) -> None:
    head, _, rest = where.partition(".")
    if not rest:
        dumped[head] = value
    elif head == "logp_callback_datasets":
        dumped[head][rest] = value
    else:
        dumped[head][int(rest.split(".")[0])]["dataset"] = value
