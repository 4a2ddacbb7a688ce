"""bench/run_all.py's report (issue 20): it names every benchmark script, each one's
quick arguments are arguments that script takes, and a partial run (``--only``) keeps
every other benchmark's latest section, also on a clean checkout without bench/out/."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scripts(run_all: ModuleType) -> set[str]:
    return {p.name for p in BENCH.glob("*.py")} - run_all.NOT_BENCHES


def test_every_bench_script_is_run_and_has_a_section_in_the_report(run_all: ModuleType
                                                                    ) -> None:
    listed = {script for _, script, *_ in run_all.BENCHES}
    assert scripts(run_all) - listed == set(), "bench scripts run_all.py does not run"
    names = {name for name, script, *_ in run_all.BENCHES if (BENCH / script).exists()}
    in_report = set(run_all.sections_of((BENCH / "RESULTS.md").read_text()))
    assert names - in_report == set(), "benchmarks without a section in bench/RESULTS.md"


def test_each_quick_argument_is_one_its_script_takes(run_all: ModuleType) -> None:
    for _, script, full, quick, _ in run_all.BENCHES:
        if not (BENCH / script).exists():
            continue
        helped = subprocess.run([sys.executable, str(BENCH / script), "--help"],
                                capture_output=True, text=True, timeout=120)
        assert helped.returncode == 0, (script, helped.stderr[-2000:])
        for flag in (a for a in [*full, *quick] if a.startswith("--")):
            assert flag in helped.stdout, f"{script} takes no {flag}"


def test_a_partial_run_keeps_every_other_section(run_all: ModuleType, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_all, "OUT", tmp_path / "out")  # a clean checkout: no outputs
    (tmp_path / "out").mkdir()
    report = "\n".join([
        "# openweights benchmark results", "", "Generated ...", "",
        "## api: jobs.retrieve", "", "`python bench/api.py` — exit 0, 9 s", "", "```",
        "## A heading inside the output is not a section", "p50 763 us", "```", "",
        "## replay: replay of the log", "", "```", "131k events/s", "```"])
    before = run_all.sections_of(report)
    assert set(before) == {"api", "replay"}
    assert "p50 763 us" in before["api"] and "A heading inside" in before["api"]
    assert run_all.kept("api", "api.py", "jobs.retrieve", before) == before["api"]
    never = run_all.kept("scale", "scale.py", "scheduler", before)
    assert never.startswith("## scale: scheduler") and "--only scale" in never
    (tmp_path / "out" / "replay.txt").write_text("140k events/s\n")  # run here since
    assert "140k events/s" in run_all.kept("replay", "replay.py", "replay", before)
