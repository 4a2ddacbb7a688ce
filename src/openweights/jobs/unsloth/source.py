"""Where a job's ``model`` comes from: an openweights model (the announced files of an
earlier job, downloaded) or a Hugging Face id (``huggingface_hub``, honouring
``HF_HUB_OFFLINE``, ``HF_HOME`` and ``HF_ENDPOINT``, so a pre-filled cache works with no
network), or a local directory.

A model that cannot be found fails fast with :class:`ModelNotFound`, whose message names
the model and every place that was looked in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from openweights.errors import OpenWeightsError
from openweights.jobs.models import ModelAnnouncement
from openweights.jobs.unsloth.report import Reporter

__all__ = ["ModelNotFound", "Resolved", "resolve"]


class ModelNotFound(OpenWeightsError):
    """The job's model is neither an openweights model nor a Hugging Face model here."""

    code = "model_not_found"
    hint = ("give a Hugging Face id the machine can download (or has in its cache), or the "
            "id of a model an earlier job produced (ow.models.list())")


@dataclass(frozen=True)
class Resolved:
    """A model on local disk: ``path``; for a LoRA adapter also its base model's path."""

    name: str
    path: Path
    base_path: Path | None = None
    base_name: str | None = None

    @property
    def is_adapter(self) -> bool:
        return self.base_path is not None


def resolve(model: str, reporter: Reporter, cache: Path) -> Resolved:
    """The model ``model`` on local disk (downloading what is missing)."""
    local = Path(model)
    if local.is_dir() and ((local / "config.json").exists()
                           or (local / "adapter_config.json").exists()):
        return _with_base(model, local, reporter, cache)
    announced = reporter.model_files(model)
    if announced is not None:
        return _with_base(model, _download_announced(announced, reporter, cache),
                          reporter, cache)
    return _with_base(model, _from_hub(model), reporter, cache)


def _with_base(name: str, path: Path, reporter: Reporter, cache: Path) -> Resolved:
    adapter = path / "adapter_config.json"
    if not adapter.exists():
        return Resolved(name, path)
    base = json.loads(adapter.read_text())["base_model_name_or_path"]
    base_resolved = resolve(base, reporter, cache)
    return Resolved(name, path, base_resolved.path, base)


def _download_announced(data: dict[str, object], reporter: Reporter, cache: Path) -> Path:
    model = ModelAnnouncement.model_validate(data)
    target = cache / model.model_id.replace("/", "--")
    for rel, file_id in model.files.items():
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            reporter.download(file_id, out)
    return target


def _from_hub(model: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:  # the cache first: a model there needs no network (nor HF_HUB_OFFLINE)
        return Path(snapshot_download(model, local_files_only=True))
    except LocalEntryNotFoundError:
        if offline:
            raise ModelNotFound(f"model {model!r} was not found: no openweights model has "
                                "this id, it is not in the local Hugging Face cache, and "
                                "HF_HUB_OFFLINE is set") from None
    except HFValidationError as exc:
        raise ModelNotFound(f"model {model!r} is not a Hugging Face id nor an openweights "
                            f"model id: {exc}") from None
    try:
        return Path(snapshot_download(model, token=os.environ.get("HF_TOKEN") or None))
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelNotFound(f"model {model!r} was not found: no openweights model has this "
                            f"id, and the Hugging Face Hub says {type(exc).__name__}") from None
    except LocalEntryNotFoundError:
        raise ModelNotFound(f"model {model!r} was not found: no openweights model has this "
                            "id, it is not in the local Hugging Face cache, and the Hub "
                            "could not be reached") from None
