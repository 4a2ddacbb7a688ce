"""What a job is given and what it leaves: its environment, and the files it uploads."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from openweights.config import Settings
from openweights.errors import OpenWeightsError

__all__ = ["JobEnvironmentRefused", "build_job_env", "check_env", "collect_uploads",
           "job_base_env"]

# What a job inherits of the agent's environment: the locale, the time zone, the terminal,
# the machine's way out (proxies, CA bundles) and the GPU stack's variables. Nothing else:
# the agent's settings (OW_HOME, the stack's URLs, its credentials) are not the job's.
_INHERITED = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH",
    "RUNPOD_POD_ID",  # the pod's proxy URL names it (an API job's endpoint)
    *(p + v for p in ("HTTP", "HTTPS", "NO", "ALL") for v in ("_PROXY", "_proxy")),
    *(p.lower() + "_proxy" for p in ("HTTP", "HTTPS", "NO", "ALL")),
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"})
_INHERITED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_")
# Linux refuses to exec with one environment string ("NAME=value" and its NUL) longer
# than MAX_ARG_STRLEN, and with arguments and environment together past ARG_MAX.
_MAX_ENTRY_BYTES = 32 * 4096
_ARG_MAX = os.sysconf("SC_ARG_MAX") if hasattr(os, "sysconf") else 2 << 20


class JobEnvironmentRefused(OpenWeightsError):
    """The job's environment cannot be passed to a process (the variable is named)."""

    code = "job_environment_refused"
    hint = ("keep large values in a file (ow.files.upload, mounted into the job) and only "
            "its id in a secret; remove secrets the jobs do not need (ow env rm NAME)")


def job_base_env(environ: Mapping[str, str], settings: Settings,
                 api_key: str | None) -> dict[str, str]:
    """What every job of this agent starts from: the variables it inherits (see
    ``_INHERITED``), and what the SDK in a job needs to reach the api as this worker (the
    client URL without credentials, the namespace, the worker's token if any)."""
    env = {k: v for k, v in environ.items()
           if k in _INHERITED or k.startswith(_INHERITED_PREFIXES)}
    url = settings.client_nats_url or settings.nats_url
    if url:
        env["OW_NATS_URL"] = _without_credentials(url)
    env.update(OW_NAMESPACE=settings.namespace, OW_DEFAULT_ORG=settings.default_org,
               OW_REQUEST_TIMEOUT_S=str(settings.request_timeout_s))
    if api_key:
        env["OPENWEIGHTS_API_KEY"] = api_key
    return env


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))


def check_env(env: Mapping[str, str]) -> None:
    """Raises :class:`JobEnvironmentRefused` for an environment no process can be given:
    a name that cannot be one, a NUL, a variable past Linux's limit on one environment
    string, or all of them past half of what arguments and environment share (the other
    half is the job's own command lines)."""
    total = 0
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise JobEnvironmentRefused(
                f"environment variable {name[:80]!r} cannot be passed to a process: a name "
                "is non-empty without '=', and neither name nor value may hold a NUL byte")
        try:
            size = len(os.fsencode(name)) + len(os.fsencode(value)) + 2
        except UnicodeError as exc:
            raise JobEnvironmentRefused(
                f"environment variable {name[:80]!r} is not valid text: {exc}") from None
        if size > _MAX_ENTRY_BYTES:
            raise JobEnvironmentRefused(
                f"environment variable {name[:80]!r} is {size - 1} bytes; Linux passes at most "
                f"{_MAX_ENTRY_BYTES - 1} bytes in one (name=value)")
        total += size + 8  # and its pointer
    if total > _ARG_MAX // 2:
        raise JobEnvironmentRefused(
            f"the job's environment is {total} bytes; at most {_ARG_MAX // 2} can be "
            "passed (half of this machine's ARG_MAX, the rest is the job's command lines)")


def build_job_env(
    base: Mapping[str, str], *, run_id: str, n_gpus: int, secrets: Mapping[str, str],
    python_executable: str = sys.executable,
) -> dict[str, str]:
    """The job's environment: ``base``, then the org's ``secrets``, then what openweights
    sets (last, so a secret cannot fake the run id): ``N_GPUS`` and, on a GPU machine,
    ``CUDA_VISIBLE_DEVICES`` naming all of them.

    The directory of ``python_executable`` goes first on ``PATH`` so that ``python`` in
    an entrypoint is the agent's own interpreter, which can import openweights.
    """
    env = {**base, **secrets}
    # Not resolved: a venv's python is a symlink, and its bin dir is what selects the venv.
    python_dir = os.path.dirname(os.path.abspath(python_executable))
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != python_dir]
    env.update(OPENWEIGHTS_RUN_ID=run_id, N_GPUS=str(n_gpus), PYTHONUNBUFFERED="1",
               PATH=os.pathsep.join([python_dir, *rest]))
    if n_gpus > 0:  # the machine's GPUs are the job's (tensor parallelism uses them all)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(n_gpus))
    return env


def collect_uploads(workdir: Path, owner: int | None = None) -> list[tuple[str, Path]]:
    """Every regular file under ``workdir/uploads`` as (posix path relative to uploads,
    absolute path), sorted. Symlinked files count only if they resolve inside
    ``workdir`` (a job must not upload the machine's files); symlinked directories are
    not followed, so a link loop cannot trap the walk. With ``owner`` (the run's uid),
    only files of that uid count: a hard link to a file of the agent's is not the job's."""
    uploads = (workdir / "uploads").absolute()
    root: Path | None = None  # resolved only if there is a file: most jobs upload none
    found: list[tuple[str, Path]] = []
    for dirpath, _dirnames, filenames in os.walk(uploads, followlinks=False):
        for name in filenames:
            path = Path(dirpath, name)
            root = root or workdir.resolve()
            if _uploadable(path, root, owner):
                found.append((path.relative_to(uploads).as_posix(), path))
    return sorted(found)


def _uploadable(path: Path, root: Path, owner: int | None) -> bool:
    if path.is_symlink() and not path.resolve().is_relative_to(root):
        return False
    try:
        st = path.stat()
    except OSError:  # dangling link, or removed meanwhile
        return False
    return stat.S_ISREG(st.st_mode) and (owner is None or st.st_uid == owner)
