"""PNG plots for the benchmarks' ``--plot-dir``: latency distributions, throughput versus
number of agents, and a curve per quantity against one x (the scale bench's queue length).

matplotlib is imported when a plot is drawn (Agg backend: no display), so a bench run
without ``--plot-dir`` does not need it. Samples come in as the benches measure them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _common import percentile

UNITS = {"s": 1.0, "ms": 1e3, "µs": 1e6}
WIDE = 10.0  # max / min of the samples (and goal) beyond which the x axis is logarithmic


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, title: str) -> Path:
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def latency_cdf(path: Path, title: str, panels: Mapping[str, Mapping[str, Sequence[float]]],
                unit: str = "ms", goal: tuple[str, float] | None = None) -> Path:
    """Empirical CDFs, one subplot per panel (e.g. per N), one line per series; p50 and p99
    marked and given in the legend. Samples and the ``(label, value)`` goal are in seconds,
    shown in ``unit``."""
    plt, k = _pyplot(), UNITS[unit]
    from matplotlib import ticker

    names = list(dict.fromkeys(name for series in panels.values() for name in series))
    colors = {name: f"C{i}" for i, name in enumerate(names)}  # the same in every panel
    values = [v * k for series in panels.values() for s in series.values() for v in s if v > 0]
    values += [goal[1] * k] if goal else []
    log = bool(values) and max(values) / min(values) > WIDE
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.5, 5.0),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    for ax, (panel, series) in zip(axes[0], panels.items(), strict=True):
        for name, samples in series.items():
            xs = sorted(v * k for v in samples)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            p50, p99 = (percentile(xs, p) for p in (50, 99))
            ax.step(xs, ys, where="post", color=colors[name],
                    label=f"{name}: p50 {_num(p50)}, p99 {_num(p99)} {unit}")
            ax.plot([p50, p99], [0.50, 0.99], "o", color=colors[name], markersize=4)
        if goal is not None:
            ax.axvline(goal[1] * k, color="grey", linestyle="--", linewidth=1,
                       label=f"{goal[0]} {_num(goal[1] * k)} {unit}")
        ax.set_title(panel)
        if log:  # ticks at 1, 2, 5 × 10^k, as plain numbers
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(f"latency ({unit}{', log scale' if log else ''})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16))
    axes[0][0].set_ylabel("fraction of samples ≤ x")
    return _save(fig, path, title)


def throughput_vs_agents(path: Path, title: str,
                         series: Mapping[str, Mapping[int, Sequence[float]]],
                         ylabel: str = "lifecycles/s",
                         goal: tuple[str, float] | None = None) -> Path:
    """Per series, the median over runs at each N with min..max as error bars; ``goal`` is
    a ``(label, value)`` line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    ns = sorted({n for by_n in series.values() for n in by_n})
    for name, by_n in series.items():
        xs = sorted(by_n)
        mids = [percentile(by_n[n], 50) for n in xs]
        lo = [m - min(by_n[n]) for m, n in zip(mids, xs, strict=True)]
        hi = [max(by_n[n]) - m for m, n in zip(mids, xs, strict=True)]
        ax.errorbar(xs, mids, yerr=[lo, hi], marker="o", capsize=4, label=name)
    if goal is not None:
        ax.axhline(goal[1], color="grey", linestyle="--", linewidth=1,
                   label=f"{goal[0]} {_num(goal[1])}")
    if len(ns) > 1 and ns[-1] / max(ns[0], 1) > 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("number of agents N (procrastinate: worker concurrency C = N)")
    ax.set_ylabel(f"{ylabel} (median, bars min..max over runs)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path, title)


def curve(path: Path, title: str, xs: Sequence[float], ys_by_name: Mapping[str, Sequence[float]],
          xlabel: str) -> Path:
    """One subplot per quantity, stacked on a shared x; each name (with its unit) is its
    subplot's y label. The y axes start at 0, so that "flat" looks flat."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(ys_by_name), 1, figsize=(6.5, 2.6 * len(ys_by_name) + 0.6),
                             sharex=True, squeeze=False, layout="constrained")
    for i, (ax, (name, ys)) in enumerate(zip(axes[:, 0], ys_by_name.items(), strict=True)):
        ax.plot(xs, ys, marker="o", color=f"C{i}")
        ax.set_ylabel(name)
        ax.set_ylim(bottom=0, top=max(ys) * 1.15 if ys and max(ys) > 0 else None)
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel(xlabel)
    return _save(fig, path, title)
