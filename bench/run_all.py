"""Run every benchmark and write ``bench/RESULTS.md``.

    python bench/run_all.py [--quick] [--only NAME ...]

Each benchmark starts its own servers and prints its table: our figure, the baseline
or peer measured in the same run, the ratio and the goal. This script runs them one
after another (never two at once: they share two cores), keeps each output under
``bench/out/``, and assembles the report. Benchmarks that write PNG plots into
``bench/out/`` (``--plot-dir``) get them linked.

The report always holds the latest section of every benchmark: one not run this time
(``--only``) keeps its section from ``bench/out/`` or, on a clean checkout where that is
absent (it is not committed), from the report as it was; one never run says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
_LOG_LINE = re.compile(r'^(\{"|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S* +\[)')
OUT = HERE / "out"

# (name, script, full args, quick args, what it measures)
BENCHES = [
    ("replay", "replay.py", ["--events", "1000000", "--runs", "3"],
     ["--events", "100000", "--runs", "1"],
     "replay of the log into fresh read models vs raw ordered read and raw COPY"),
    ("api", "api.py", ["--runs", "3"], ["--n", "500", "--submissions", "2000", "--runs", "1"],
     "jobs.retrieve round trip and submissions/s vs bare request/reply"),
    ("ingest", "ingest.py", ["--events", "100000", "--runs", "3"],
     ["--events", "20000", "--runs", "1"],
     "ow.run.log events appended and projected vs raw js.publish_async"),
    ("lifecycle", "lifecycle.py", [], ["--quick"],
     "pickup latency and no-op job lifecycles/s vs procrastinate"),
    ("scale", "scale.py", ["--jobs", "10000", "--workers", "200", "--orgs", "1,100"],
     ["--jobs", "2000", "--workers", "50", "--orgs", "1,10"],
     "scheduler decision time per assignment and memory vs queue length"),
    ("chaos", "chaos.py", ["--jobs", "1000", "--agents", "16"], ["--quick"],
     "1,000 jobs while agents, services, nats-server and Postgres are killed"),
    ("fuzz", "fuzz.py", [], ["--cases", "1000"],
     "random and malformed commands against every service subject"),
    ("provisioning", "provisioning.py", [], ["--jobs", "2000", "--machines", "50",
                                             "--repeat", "2"],
     "hardware selection, a provisioner pass and RunPod reconciliation at 10k jobs x 200"),
    ("dashboard", "dashboard.py", [], ["--jobs", "2000", "--requests", "50", "--lines", "40"],
     "the job list page with 10,000 jobs and a printed line's way to the open page"),
    ("production", "production.py", [], ["--jobs", "60", "--pause-s", "10"],
     "compose's topology here: 300 jobs while NATS nodes and services fail"),
    ("finetune", "finetune.py", [], ["--quick"],
     "a fine-tuning run through openweights vs the bare training script"),
    ("inference", "inference.py", [], ["--prompts", "16", "--chats", "20"],
     "batch inference, deploy time-to-ready and chat latency vs bare vLLM"),
]
NOT_BENCHES = {"run_all.py", "_common.py", "plots.py", "skeleton.py"}  # helpers, baselines
_SECTION = re.compile(r"^## (\w+): ")


def run(script: str, args: list[str]) -> tuple[int, str, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True,
                          text=True, env=dict(os.environ, OW_LOG_JSON="true"),
                          timeout=3600)
    # Services log to stderr as JSON lines; the tables go to stdout. A log line that
    # still reached stdout (a library's, a service configured elsewhere) is dropped.
    return proc.returncode, without_logs(proc.stdout), time.perf_counter() - started


def without_logs(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not _LOG_LINE.match(line))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes (minutes, not hours)")
    ap.add_argument("--only", nargs="*", help="names of benchmarks to run")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    report = HERE / "RESULTS.md"
    before = sections_of(report.read_text()) if report.exists() else {}
    sections, failed = [], []
    for name, script, full, quick, what in BENCHES:
        if not (HERE / script).exists():
            continue
        if args.only and name not in args.only:
            sections.append(kept(name, script, what, before))
            continue
        print(f"running {name} ...", flush=True)
        extra = quick if args.quick else full
        if "--plot-dir" in _help(script):
            extra = [*extra, "--plot-dir", os.path.relpath(OUT)]
        for old in OUT.glob(f"{name}*.png"):  # a failed run must not show stale plots
            old.unlink()
        code, out, secs = run(script, extra)
        how = f"`python bench/{script} {' '.join(extra)}` — exit {code}, {secs:.0f} s"
        (OUT / f"{name}.txt").write_text(out)
        (OUT / f"{name}.how").write_text(how)
        if code != 0:
            failed.append(name)
        sections.append(section(name, what, how, out))
    header = [
        "# openweights benchmark results", "",
        f"Generated by `python bench/run_all.py{' --quick' if args.quick else ''}"
        f"{' --only ' + ' '.join(args.only) if args.only else ''}` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "Every figure is a ratio to a baseline measured in the same run (see each table); "
        "the box is shared and noisy (±25%, LIMITS.md).", "",
    ]
    report.write_text("\n".join(header + sections) + "\n")
    print(f"wrote {report}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


def section(name: str, what: str, how: str, out: str) -> str:
    plots = sorted(OUT.glob(f"{name}*.png"))
    body = [f"## {name}: {what}", "", how, "", "```", out.strip() or "(no output)", "```"]
    body += [f"![{p.stem}](out/{p.name})" for p in plots]
    return "\n".join(body)


def kept(name: str, script: str, what: str, before: dict[str, str]) -> str:
    """A benchmark not rerun: its last output here, else its section in the report as it
    was, else a section saying how to run it."""
    if (OUT / f"{name}.txt").exists():
        how = (OUT / f"{name}.how").read_text() if (OUT / f"{name}.how").exists() else ""
        return section(name, what, how, without_logs((OUT / f"{name}.txt").read_text()))
    if name in before:
        return before[name]
    return "\n".join([f"## {name}: {what}", "", f"not run yet: `python bench/run_all.py "
                      f"--only {name}` (or `python bench/{script}`)"])


def sections_of(report: str) -> dict[str, str]:
    """The report's sections by benchmark name, verbatim (headings inside a section's
    fenced output are not sections)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    fenced = False
    for line in report.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else _SECTION.match(line)
        if match:
            current = found.setdefault(match.group(1), [])
        if current is not None:
            current.append(line)
    return {name: "\n".join(lines).rstrip() for name, lines in found.items()}


def _help(script: str) -> str:
    try:
        return subprocess.run([sys.executable, str(HERE / script), "--help"],
                              capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


if __name__ == "__main__":
    sys.exit(main())
