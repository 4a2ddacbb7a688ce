"""Custom jobs: subclass ``Jobs``, decorate with ``@register(name)``, call
``ow.<name>.create(**params)``.

``mount`` maps local files or whole directories to paths in the job's working
directory; they are uploaded (purpose ``custom_job_file``) and downloaded by the agent.
A job class is written once, against the async client; the blocking client wraps each
registered one (``ow.<name>`` is then a :class:`~openweights.sdk.blocking.BoundJobs`).
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from openweights.errors import InvalidRequest
from openweights.sdk.files import AsyncFiles
from openweights.sdk.jobs import AsyncJob, AsyncJobsResource

DEFAULT_IMAGE = "nielsrolf/ow-unsloth:v0.11"
J = TypeVar("J", bound="type[Jobs]")


class JobsClient(Protocol):
    """What a job class may use of its client (``AsyncOpenWeights`` is one)."""

    @property
    def files(self) -> AsyncFiles: ...

    @property
    def jobs(self) -> AsyncJobsResource: ...

    @property
    def organization_id(self) -> str: ...

    @property
    def hf_org(self) -> str | None: ...

    @property
    def org_name(self) -> str | None: ...

    async def connect(self) -> None: ...


class _Attaching(Protocol):
    def _attach(self, name: str, cls: type[Jobs]) -> None: ...


# Every registered job class, and every live async client, so that @register reaches
# clients created before it.
REGISTERED: dict[str, type[Jobs]] = {}
CLIENTS: weakref.WeakSet[_Attaching] = weakref.WeakSet()


class Jobs:
    """A job type: its params (a pydantic model), files to mount, image, VRAM and the
    command (``get_entrypoint``). ``self.client`` is the async client it submits with."""

    mount: ClassVar[dict[str, str]] = {}
    params: ClassVar[type[BaseModel]] = BaseModel
    base_image: ClassVar[str] = DEFAULT_IMAGE
    requires_vram_gb: ClassVar[int | None] = 24
    job_type: ClassVar[str] = "custom"

    def __init__(self, client: JobsClient) -> None:
        self.client = client

    @property
    def id_prefix(self) -> str:
        return type(self).__name__.lower()

    def get_entrypoint(self, validated_params: Any) -> str:
        """The shell command that runs the job (override it)."""
        raise NotImplementedError(f"{type(self).__name__} must define get_entrypoint()")

    async def _upload_mounts(self) -> dict[str, str]:
        mounted: dict[str, str] = {}
        files = self.client.files
        for local, target in self.mount.items():
            path = Path(local)
            if path.is_dir():
                for file in sorted(p for p in path.rglob("*") if p.is_file()):
                    rel = file.relative_to(path).as_posix()
                    info = await files.upload(file, "custom_job_file")
                    mounted[os.path.join(target, rel)] = info["id"]
            elif path.is_file():
                mounted[target] = (await files.upload(path, "custom_job_file"))["id"]
            else:
                raise InvalidRequest(f"mount source {local!r} does not exist")
        return mounted

    def _validate(self, params: dict[str, Any]) -> BaseModel:
        if unknown := _dropped_keys(self.params, params):
            raise InvalidRequest(f"unknown params for {type(self).__name__}: "
                                 f"{', '.join(unknown)} (it takes "
                                 f"{', '.join(self.params.model_fields)})")
        try:
            return self.params(**params)
        except ValidationError as exc:
            raise InvalidRequest(f"invalid params for {type(self).__name__}: {exc}") from None

    async def create(self, **params: Any) -> AsyncJob:
        """Submit the job (the same params again return the same job, which runs once).
        ``allowed_hardware``, ``docker_image``, ``requires_vram_gb`` (and ``job_id_suffix``
        and ``timeout``, seconds, unless the params model declares them) are options of the
        submission, not params.

        Raises ``InvalidRequest`` for params the model rejects, unknown hardware or
        missing mount sources."""
        allowed_hardware = params.pop("allowed_hardware", None)
        docker_image = params.pop("docker_image", None) or self.base_image
        # The class default nobody chose: the api refuses it where it can never be met.
        vram_defaulted = "requires_vram_gb" not in params and not _declares_vram(type(self))
        requires_vram_gb = params.pop("requires_vram_gb", self.requires_vram_gb)
        # A suffix the model does not declare is an option of create(), not a param.
        suffix = None if "job_id_suffix" in self.params.model_fields else params.pop(
            "job_id_suffix", None)
        # So is a timeout (seconds: past it, pending or running, the job is canceled).
        timeout = None if "timeout" in self.params.model_fields else params.pop("timeout", None)
        validated = self._validate(params)
        dumped = validated.model_dump(mode="json")
        mounted = await self._upload_mounts()
        return await self.client.jobs.submit(
            id_prefix=self.id_prefix, type=self.job_type, model=dumped.get("model"),
            params={"validated_params": dumped, "mounted_files": mounted},
            script=self.get_entrypoint(validated), docker_image=docker_image,
            requires_vram_gb=requires_vram_gb, allowed_hardware=allowed_hardware,
            timeout=timeout, job_id_suffix=dumped.get("job_id_suffix", suffix),
            vram_defaulted=vram_defaulted)


def _declares_vram(cls: type[Jobs]) -> bool:
    """Whether ``cls`` (or a base of it other than ``Jobs``) sets ``requires_vram_gb``."""
    return any("requires_vram_gb" in vars(c) for c in cls.__mro__ if c is not Jobs)


def _dropped_keys(model: type[BaseModel], given: dict[str, Any]) -> list[str]:
    """Keys pydantic would silently ignore (its default for extra keys): a typo in a
    param name must not submit a job with the default value instead."""
    accepted = _accepted_keys(model)
    return [] if accepted is None else sorted(set(given) - accepted)


@functools.cache
def _accepted_keys(model: type[BaseModel]) -> frozenset[str] | None:
    """Names and aliases ``model`` takes; None when it keeps or refuses extras itself."""
    if model.model_config.get("extra") in ("allow", "forbid"):
        return None
    known: set[str] = set()
    for name, f in model.model_fields.items():
        known |= {name, *(a for a in (f.alias, f.validation_alias) if isinstance(a, str))}
    return frozenset(known)


def register(name: str) -> Callable[[J], J]:
    """Make ``ow.<name>`` an instance of the decorated ``Jobs`` subclass on every client
    (existing and future ones)."""

    def wrap(cls: J) -> J:
        REGISTERED[name] = cls
        for client in list(CLIENTS):
            client._attach(name, cls)
        return cls

    return wrap


def track(client: _Attaching) -> None:
    """Give ``client`` every registered job class now, and those registered later."""
    CLIENTS.add(client)
    for name, cls in REGISTERED.items():
        client._attach(name, cls)
