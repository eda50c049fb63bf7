"""Plots of benchmark JSON documents (matplotlib, an optional extra: ``asyncflow-hpc[report]``).

matplotlib is imported only inside these functions, with the non-interactive Agg backend, so
benchmarks run on login nodes and in batch jobs without it or without a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

__all__ = ["plot_comparison", "plot_scaling"]

REFERENCE = "radical.asyncflow"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigurationError(
            "plotting needs matplotlib: pip install 'asyncflow-hpc[report]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _where(doc: Mapping[str, Any]) -> str:
    m = doc.get("machine", {})
    where = f"{m.get('host', '?')}, {m.get('cpus', '?')} cores, Python {m.get('python', '?')}"
    load = m.get("load_average")
    if load:  # a busy machine explains slow or scattered numbers
        where += f", load {load[0]:g} at start"
    return where


def plot_scaling(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Throughput and efficiency against nodes, each with its ideal, side by side."""
    plt = _pyplot()
    series = doc["series"]
    pts = [p for p in doc["points"] if p.get("throughput")]
    if not pts:
        raise ConfigurationError("no successful point to plot")
    nodes = [p["nodes"] for p in pts]
    thr = [p["throughput"] for p in pts]
    eff = [p.get("efficiency") or 0.0 for p in pts]
    base = pts[0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    ideal = [base["throughput"] * n / base["nodes"] for n in nodes]
    ax1.plot(nodes, ideal, "--", color="grey", label="ideal (linear)")
    # what the resources allow with a zero-cost engine: tasks / ideal makespan
    bound = [(n, p["completed"] / p["ideal_s"]) for n, p in zip(nodes, pts, strict=True)
             if p.get("ideal_s")]
    if bound:
        ax1.plot([b[0] for b in bound], [b[1] for b in bound], "s:", color="tab:orange",
                 label="resource bound (tasks / ideal makespan)", markersize=5)
    ax1.plot(nodes, thr, "o-", color="tab:blue", label="measured", markersize=7)
    for n, t in zip(nodes, thr, strict=True):
        ax1.annotate(f"{t:,.1f}", (n, t), textcoords="offset points", xytext=(6, -12))
    ax1.set_xlabel("nodes")
    ax1.set_ylabel("throughput (tasks/s)")
    ax1.set_title("throughput")
    ax1.set_ylim(bottom=0, top=max(thr + ideal + [b[1] for b in bound]) * 1.6)  # legend room
    ax2.axhline(1.0, ls="--", color="grey", label="ideal")
    ax2.plot(nodes, eff, "o-", color="tab:green", label="measured", markersize=7)
    for n, e in zip(nodes, eff, strict=True):
        ax2.annotate(f"{e:.0%}", (n, e), textcoords="offset points", xytext=(6, -12))
    ax2.set_xlabel("nodes")
    ax2.set_ylabel(f"{series['mode']} scaling efficiency")
    ax2.set_title("efficiency (relative to the smallest point)")
    ax2.set_ylim(0, max(1.2, max(eff) * 1.1))
    for ax in (ax1, ax2):
        ax.set_xticks(sorted(set(nodes)))
        if len(nodes) == 1:
            ax.set_xlim(nodes[0] - 1, nodes[0] + 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    size = series["size"]
    per = "per node" if series["mode"] == "weak" else "in total"
    how = ("one pilot over the allocation" if series.get("backend") == "radical"
           else f"one {series.get('backend', 'local')} engine per node")
    fig.suptitle(f"{series['workload']} ({size} tasks {per}), {series['mode']} scaling on "
                 f"site {doc['site']['name']}, {how}\n[submitted from {_where(doc)}]",
                 fontsize=10)
    return _save(fig, plt, path)


def plot_comparison(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Horizontal bars, log scale: each workload's time per engine (asyncio, ours, reference)."""
    plt = _pyplot()
    rows: Sequence[Mapping[str, Any]] = doc["comparison"]
    engines = [("asyncio", "plain asyncio", "tab:grey"),
               ("asyncflow_hpc", "asyncflow-hpc", "tab:blue"),
               ("radical.asyncflow", "radical.asyncflow", "tab:orange")]
    fig, ax = plt.subplots(figsize=(10, 0.75 * len(rows) + 1.6), constrained_layout=True)
    height = 0.26
    labels = [r["label"] for r in rows]
    for k, (key, name, colour) in enumerate(engines):
        ys, xs = [], []
        for i, r in enumerate(rows):
            m = r.get(key)
            if m and m.get("makespan_s"):
                ys.append(i + (k - 1) * height)
                xs.append(m["makespan_s"] * 1e3)
        if xs:
            bars = ax.barh(ys, xs, height=height, color=colour, label=name)
            ax.bar_label(bars, labels=[f"{x:,.1f} ms" if x < 1e4 else f"{x / 1e3:,.1f} s"
                                       for x in xs], padding=3, fontsize=8)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("wall time, best of runs (ms, log scale; shorter is better)")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 8)  # room for the labels
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    runs = f"best of {doc.get('repeat', '?')}"
    if doc.get("reference_repeat"):
        runs += f" ({REFERENCE}: best of {doc['reference_repeat']})"
    fig.suptitle(f"asyncflow-hpc side by side, {runs} [{_where(doc)}]", fontsize=10)
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | os.PathLike[str]) -> Path:
    import io

    from ..safe_files import write_file

    out = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format=out.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    write_file(out, buf.getvalue(), 0o600, make_dirs=True)
    return out
