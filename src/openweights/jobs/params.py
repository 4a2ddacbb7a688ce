"""How a built-in job's worker reads its own params: the job's ``validated_params``,
validated again by the config class the job was submitted with.

Inside a job the agent sets ``OPENWEIGHTS_JOB_ID`` (and the worker's credentials), and a
worker's token may read the jobs it was given (``jobs.get``); a path to a JSON file
reads that instead (for running a worker by hand, as the original's
``training.py config.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from openweights.errors import InvalidRequest

C = TypeVar("C", bound=BaseModel)


def job_id_from_env() -> str:
    """This job's id. Raises ``InvalidRequest`` outside a job run by an agent."""
    job_id = os.environ.get("OPENWEIGHTS_JOB_ID")
    if not job_id:
        raise InvalidRequest("OPENWEIGHTS_JOB_ID is not set: this runs inside a job started "
                             "by an agent, or give a params JSON file")
    return job_id


def load_params(config: type[C], source: str | None = None) -> tuple[C, str | None]:
    """``(params, job id)``: from the JSON file ``source`` (job id None unless
    ``OPENWEIGHTS_JOB_ID`` is set), else from the job ``source`` or ``$OPENWEIGHTS_JOB_ID``
    read through the SDK. Raises ``InvalidRequest``, ``NotFound``, pydantic's
    ``ValidationError``."""
    if source is not None and source.endswith(".json") and Path(source).is_file():
        data = json.loads(Path(source).read_text())
        return config.model_validate(data), os.environ.get("OPENWEIGHTS_JOB_ID")
    job_id = source or job_id_from_env()
    from openweights.sdk.blocking import OpenWeights

    ow = OpenWeights()
    try:
        params = ow.jobs.retrieve(job_id).params
    finally:
        ow.close()
    validated = params.get("validated_params") if isinstance(params, dict) else None
    if not isinstance(validated, dict):
        raise InvalidRequest(f"job {job_id} has no validated_params: it was not submitted "
                             f"as a {config.__name__} job")
    return config.model_validate(validated), job_id
