"""The requirement list of a worker environment, from openweights' own dependencies.

Read from the checkout's ``pyproject.toml`` when openweights runs from one (an edit of
an extra is seen at once, without reinstalling), else from the installed package's
metadata. Extras that name ``openweights[other]`` are expanded; the result is sorted
and deduplicated, so its hash changes only when the list does.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from openweights.errors import InvalidRequest
from openweights.workerenv.specs import EnvSpec

__all__ = ["package_dir", "project_requirements", "requirements_for"]

_SELF = re.compile(r"^openweights\s*(\[(?P<extras>[^\]]*)\])?\s*$")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*['"](?P<extra>[^'"]+)['"]""")


def package_dir() -> Path:
    """The directory of the running openweights package (what environments link to)."""
    return Path(__file__).resolve().parents[1]


def _pyproject() -> Path | None:
    candidate = package_dir().parents[1] / "pyproject.toml"
    if not candidate.is_file():
        return None
    project = tomllib.loads(candidate.read_text()).get("project", {})
    return candidate if project.get("name") == "openweights" else None


def project_requirements() -> tuple[list[str], dict[str, list[str]]]:
    """``(core dependencies, {extra: its requirements})`` of openweights."""
    path = _pyproject()
    if path is not None:
        project = tomllib.loads(path.read_text())["project"]
        return (list(project.get("dependencies", [])),
                {k: list(v) for k, v in project.get("optional-dependencies", {}).items()})
    core: list[str] = []
    extras: dict[str, list[str]] = {}
    for line in importlib.metadata.requires("openweights") or []:
        requirement, _, marker = line.partition(";")
        match = _EXTRA_MARKER.search(marker)
        if match is None:
            core.append(requirement.strip())
        else:
            extras.setdefault(match["extra"], []).append(requirement.strip())
    return core, extras


def _expand(extra: str, extras: dict[str, list[str]], seen: set[str]) -> list[str]:
    if extra not in extras:
        raise InvalidRequest(f"openweights has no extra {extra!r} (it has "
                             f"{', '.join(sorted(extras))})")
    if extra in seen:
        return []
    seen.add(extra)
    out: list[str] = []
    for requirement in extras[extra]:
        own = _SELF.match(requirement)
        if own is None:
            out.append(requirement)
            continue
        for name in (own["extras"] or "").split(","):
            if name.strip():
                out += _expand(name.strip(), extras, seen)
    return out


def requirements_for(spec: EnvSpec) -> list[str]:
    """Every requirement the environment of ``spec`` installs, sorted."""
    core, extras = project_requirements()
    found = list(core) if spec.core else []
    seen: set[str] = set()
    for extra in spec.extras:
        found += _expand(extra, extras, seen)
    found += spec.requirements
    return sorted({" ".join(r.split()) for r in found})
