"""Figures of a run (matplotlib, the optional extra ``report``; imported on first use).

Each function takes the task rows of a :class:`~asyncflow_hpc.report.reader.Log` and returns
a matplotlib ``Figure`` (made without pyplot, so the caller's backend is left alone). Every
figure stays readable from ten tasks to millions: small runs are drawn task by task, large
ones are aggregated into time bins.

* :func:`timeline` — tasks by node: while there are few, one bar per task on inferred worker
  slots; otherwise a waterfall, one thin line per task (waiting, then running) ordered by
  node and start, which shows waves, stragglers and failures at any scale.
* :func:`concurrency` — running and waiting tasks over time, and tasks finished so far.
* :func:`utilisation` — CPU and memory per node from the resource samples (or, without
  samples, busy task slots).
* :func:`durations` — histogram of task durations by final state.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Any

from .reader import Log, TaskRow

__all__ = ["timeline", "concurrency", "utilisation", "durations", "all_figures", "png_bytes",
           "save_png"]

COLORS = {"completed": "#3a9e6a", "failed": "#d1495b", "canceled": "#9e9e9e",
          "running": "#edae49", "pending": "#7aa6c2"}
BAR_LIMIT = 1500  # tasks drawn as bars on worker slots up to this many...
LANE_LIMIT = 80  # ...and this many slots; beyond, a waterfall
WATERFALL_LIMIT = 200_000  # tasks drawn in a waterfall; more are sampled evenly
DPI = 110


def _mpl() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'asyncflow-hpc[report]'") from exc
    return Figure, FigureCanvasAgg


def _figure(w: float, h: float) -> Any:
    Figure, Canvas = _mpl()
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    Canvas(fig)
    return fig


def _time_unit(span: float) -> tuple[float, str]:
    if span <= 300:
        return 1.0, "s"
    if span <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _ran(t: TaskRow) -> bool:
    return t.ran


def _intervals(tasks: list[TaskRow]) -> tuple[list[TaskRow], float, float]:
    """Tasks that ran, the time origin and the end of the run."""
    ran = [t for t in tasks if _ran(t)]
    if not ran:
        return [], 0.0, 1.0
    t0 = min(t.created or t.run_start for t in ran)  # type: ignore[type-var]
    ends = [t.end for t in ran if t.end is not None]
    t1 = max(ends + [t.run_start for t in ran])  # type: ignore[operator]
    return ran, t0, max(t1, t0 + 1e-6)


def assign_lanes(tasks: list[TaskRow], t_end: float) -> tuple[dict[str, int], list[int]]:
    """Greedy interval partitioning per node: each task gets the lowest free slot.

    Returns ``{node: number of slots}`` (ordered) and the slot of each task (same order as
    ``tasks``), counted from 0 within its node.
    """
    by_node: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tasks):
        by_node[t.node or "?"].append(i)
    lanes_of = [0] * len(tasks)
    counts: dict[str, int] = {}
    # start and end times are when the engine's loop saw them; a task that starts on a worker
    # a moment before the loop has seen its predecessor end must not count as a new slot
    spans = sorted((t.end or t_end) - t.run_start for t in tasks)  # type: ignore[operator]
    tol = min(0.01, 0.1 * spans[len(spans) // 2]) if spans else 0.0
    for node in sorted(by_node):
        idx = sorted(by_node[node], key=lambda i: tasks[i].run_start)  # type: ignore[arg-type,return-value]
        busy: list[tuple[float, int]] = []  # (end, lane)
        free: list[int] = []
        n = 0
        for i in idx:
            t = tasks[i]
            s = t.run_start
            while busy and busy[0][0] <= s + tol:  # type: ignore[operator]
                heapq.heappush(free, heapq.heappop(busy)[1])
            if free:
                lane = heapq.heappop(free)
            else:
                lane = n
                n += 1
            lanes_of[i] = lane
            heapq.heappush(busy, (t.end if t.end is not None else t_end, lane))
        counts[node] = n
    return counts, lanes_of


def _coverage(np: Any, starts: Any, ends: Any, rows: Any, nrows: int, t0: float, t1: float,
              nbins: int) -> Any:
    """How much of each (row, time bin) cell the intervals cover, in bin widths."""
    width = (t1 - t0) / nbins
    s = np.clip((starts - t0) / width, 0, nbins)
    e = np.clip((ends - t0) / width, 0, nbins)
    e = np.maximum(e, s)
    sb = np.minimum(s.astype(np.int64), nbins - 1)
    eb = np.minimum(e.astype(np.int64), nbins - 1)
    grid = np.zeros((nrows, nbins + 1))
    same = sb == eb
    np.add.at(grid, (rows[same], sb[same]), e[same] - s[same])
    multi = ~same
    r, sbm, ebm, sm, em = rows[multi], sb[multi], eb[multi], s[multi], e[multi]
    np.add.at(grid, (r, sbm), (sbm + 1) - sm)  # the partial first bin
    np.add.at(grid, (r, ebm), em - ebm)  # the partial last bin
    full = np.zeros((nrows, nbins + 1))  # whole bins in between, by a difference array
    np.add.at(full, (r, sbm + 1), 1.0)
    np.add.at(full, (r, ebm), -1.0)
    grid += np.cumsum(full, axis=1)
    return grid[:, :nbins]


def timeline(log: Log, title: str = "Task timeline by node") -> Any:
    tasks, t0, t1 = _intervals(log.tasks)
    if not tasks:
        return _empty("No task ran", title)
    scale, unit = _time_unit(t1 - t0)
    never = sum(1 for t in log.tasks if not t.is_block and not _ran(t))
    note = f", {never:,} more never ran" if never else ""
    if len(tasks) <= BAR_LIMIT:
        counts, lanes = assign_lanes(tasks, t1)
        if sum(counts.values()) <= LANE_LIMIT:
            return _timeline_bars(tasks, lanes, counts, t0, t1, scale, unit, title, note)
    return _waterfall(tasks, t0, t1, scale, unit, title, note)


def _timeline_bars(tasks: list[TaskRow], lanes: list[int], counts: dict[str, int], t0: float,
                   t1: float, scale: float, unit: str, title: str, note: str) -> Any:
    node_base: dict[str, int] = {}
    total = 0
    for node, n in counts.items():
        node_base[node] = total
        total += n
    fig = _figure(12, min(10, 1.6 + 0.32 * total))
    ax = fig.add_subplot()
    label_bars = len(tasks) <= 40
    seen: set[str] = set()
    for t, lane in zip(tasks, lanes, strict=True):
        y = node_base[t.node or "?"] + lane
        s = (t.run_start - t0) / scale  # type: ignore[operator]
        e = ((t.end if t.end is not None else t1) - t0) / scale
        state = t.state
        # a task that took no measurable time still gets a visible sliver
        w = max(e - s, (t1 - t0) / scale * 0.002)
        # an outline, so that back-to-back tasks on one slot stay apart
        ax.barh(y, w, left=s, height=0.72, color=COLORS.get(state, "#777"),
                edgecolor="#333" if label_bars else "white",
                linewidth=0.4 if label_bars else 0.8 if len(tasks) <= 300 else 0.3,
                label=state if state not in seen else None)
        seen.add(state)
        # a name only where it fits: about 0.9 % of the axis per character at this width
        if label_bars and w >= (t1 - t0) / scale * 0.009 * (len(t.name) + 2):
            ax.text(s + w / 2, y, t.name, ha="center", va="center", fontsize=8, color="black",
                    clip_on=True)
    ticks = [node_base[n] + i for n, c in counts.items() for i in range(c)]
    ax.set_yticks(ticks)
    if total <= 40:
        ax.set_yticklabels([f"{n} #{i}" for n, c in counts.items() for i in range(c)],
                           fontsize=8)
    else:
        ax.set_yticklabels([])
    for b in node_base.values():
        if b:
            ax.axhline(b - 0.5, color="#444", linewidth=0.8)
    ax.set_ylim(total - 0.5, -0.5)
    ax.set_xlim(0, (t1 - t0) / scale * 1.01)
    ax.set_xlabel(f"time since the first task was created ({unit})")
    ax.set_ylabel("node #worker slot (inferred)")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=8, ncols=len(seen))
    ax.set_title(f"{title} — {len(tasks):,} tasks ran{note}")
    return fig


def _waterfall(tasks: list[TaskRow], t0: float, t1: float, scale: float, unit: str,
               title: str, note: str) -> Any:
    """One row per task, grouped by node and sorted by start: waiting (pale), running."""
    import numpy as np
    from matplotlib.collections import LineCollection

    n_all = len(tasks)
    if n_all > WATERFALL_LIMIT:  # keep the picture (and the renderer) at a fixed cost
        step = n_all / WATERFALL_LIMIT
        tasks = [tasks[int(i * step)] for i in range(WATERFALL_LIMIT)]
    order = sorted(range(len(tasks)),
                   key=lambda i: (tasks[i].node or "~", tasks[i].run_start))
    tasks = [tasks[i] for i in order]
    n = len(tasks)
    y = np.arange(n, dtype=float)
    created = np.array([(t.created if t.created is not None else t.run_start) for t in tasks],
                       dtype=float)
    start = np.array([t.run_start for t in tasks], dtype=float)
    end = np.array([t.end if t.end is not None else t1 for t in tasks], dtype=float)
    pixel = (t1 - t0) / 1200  # make zero-length runs one pixel wide
    end = np.maximum(end, start + pixel)
    fig = _figure(12, 6.5)
    ax = fig.add_subplot()
    lw = max(0.3, min(3.0, 500 / n))
    wait = np.stack([np.column_stack([(created - t0) / scale, y]),
                     np.column_stack([(start - t0) / scale, y])], axis=1)
    ax.add_collection(LineCollection(wait, colors=COLORS["pending"], linewidths=lw, alpha=0.5,
                                     rasterized=True, label="waiting"))
    states = np.array([t.state for t in tasks])
    for state in ("completed", "canceled", "running", "failed"):  # failed drawn last, on top
        m = states == state
        if not m.any():
            continue
        seg = np.stack([np.column_stack([(start[m] - t0) / scale, y[m]]),
                        np.column_stack([(end[m] - t0) / scale, y[m]])], axis=1)
        ax.add_collection(LineCollection(
            seg, colors=COLORS[state], linewidths=lw * (3 if state == "failed" else 1),
            rasterized=True, label=f"{state} ({int(m.sum() * n_all / n):,})"))
    # node separators and labels
    nodes = [t.node or "?" for t in tasks]
    bounds = [0] + [i for i in range(1, n) if nodes[i] != nodes[i - 1]] + [n]
    ticks, labels = [], []
    stride = max(1, (len(bounds) - 1) // 24)
    for k in range(len(bounds) - 1):
        a, b = bounds[k], bounds[k + 1]
        if a:
            ax.axhline(a - 0.5, color="#444", linewidth=0.6)
        if k % stride == 0:
            ticks.append((a + b) / 2)
            labels.append(f"{nodes[a]} ({round((b - a) * n_all / n):,})")
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, (t1 - t0) / scale * 1.01)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel(f"time since the first task was created ({unit})")
    ax.set_ylabel("tasks by node, in order of start")
    ax.grid(axis="x", alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c.get_colors()[0], linewidth=5, alpha=c.get_alpha() or 1)
               for c in ax.collections]
    ax.legend(handles, [c.get_label() for c in ax.collections], loc="lower left", fontsize=8)
    sample = f" (every {n_all / n:.1f}th of {n_all:,} shown)" if n < n_all else ""
    ax.set_title(f"{title} — {n_all:,} tasks ran{note}{sample}")
    return fig


def concurrency(log: Log, title: str = "Tasks over time") -> Any:
    import numpy as np

    tasks, t0, t1 = _intervals(log.tasks)
    if not tasks:
        return _empty("No task ran", title)
    scale, unit = _time_unit(t1 - t0)
    fig = _figure(12, 7)
    axes = fig.subplots(3, 1, sharex=True, height_ratios=[2, 2, 2])
    starts = np.array([t.run_start for t in tasks], dtype=float)
    ends = np.array([t.end if t.end is not None else t1 for t in tasks], dtype=float)
    created = np.array([t.created if t.created is not None else t.run_start for t in tasks],
                       dtype=float)
    pairs = (((starts, ends), "running", COLORS["running"]),
             ((created, starts), "waiting (created, not yet running)", COLORS["pending"]))
    nbins = 600  # a mean per bin: readable at any size, and hides the microsecond overlaps
    zeros = np.zeros(len(tasks), dtype=np.int64)  # of a worker's next start and last end
    mid = (np.arange(nbins) + 0.5) * (t1 - t0) / nbins / scale
    for ax, ((a, b), name, color) in zip(axes[:2], pairs, strict=True):
        cov = _coverage(np, a, b, zeros, 1, t0, t1, nbins)[0]
        ax.fill_between(mid, cov, step="mid", color=color, alpha=0.35)
        ax.plot(mid, cov, drawstyle="steps-mid", color=color, linewidth=1)
        ax.set_ylabel(name.split(" ")[0])
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_title(name, fontsize=9, loc="left")
    ax2 = axes[2]
    for state in ("completed", "failed", "canceled"):  # also those that never ran
        e = np.sort(np.array([t.end for t in log.tasks if not t.is_block and t.state == state
                              and t.end is not None], dtype=float))
        if len(e):
            ax2.step(np.concatenate([[0.0], (e - t0) / scale]), np.arange(len(e) + 1),
                     where="post", color=COLORS[state], label=f"{state} ({len(e):,})")
    ax2.set_ylabel("finished so far")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel(f"time since the first task was created ({unit})")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="upper left", fontsize=8)
    for ax in axes:
        ax.yaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"{title} — {len(tasks):,} tasks (mean over {nbins} time bins)")
    return fig


def utilisation(log: Log, title: str = "Utilisation") -> Any:
    import numpy as np

    samples = [r for r in log.resources if r.get("event_time") is not None]
    tasks, t0, t1 = _intervals(log.tasks)
    if not samples:
        if not tasks:
            return _empty("No resource samples and no tasks", title)
        # no psutil samples (sampling switched off): running tasks per node instead
        scale, unit = _time_unit(t1 - t0)
        fig = _figure(12, 3.6)
        ax = fig.add_subplot()
        nbins = 600
        nodes = sorted({t.node or "?" for t in tasks})
        index = {n: k for k, n in enumerate(nodes)}
        rows = np.array([index[t.node or "?"] for t in tasks])
        starts = np.array([t.run_start for t in tasks], dtype=float)
        ends = np.array([t.end if t.end is not None else t1 for t in tasks], dtype=float)
        cov = _coverage(np, starts, ends, rows, len(nodes), t0, t1, nbins)
        x = (np.arange(nbins) + 0.5) * (t1 - t0) / nbins / scale
        if len(nodes) <= 8:
            for k, n in enumerate(nodes):
                ax.plot(x, cov[k], drawstyle="steps-mid", label=n)
        else:
            ax.fill_between(x, cov.min(axis=0), cov.max(axis=0), step="mid", alpha=0.25,
                            label=f"min–max of {len(nodes)} nodes")
            ax.plot(x, cov.mean(axis=0), drawstyle="steps-mid", color="black", label="mean")
        ax.set_ylim(bottom=0)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("running tasks")
        ax.set_xlabel(f"time since the first task was created ({unit})")
        ax.set_title(f"{title}: running tasks per node (no resource samples in the log)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        return fig
    times = [r["event_time"] for r in samples]
    origin = min([t0] + times) if tasks else min(times)
    end = max([t1] + times) if tasks else max(times)
    scale, unit = _time_unit(max(end - origin, 1e-6))
    by_node: dict[str, list[dict]] = defaultdict(list)
    for r in samples:
        by_node[r.get("node_id") or "?"].append(r)
    fig = _figure(12, 5.5)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, key, label in ((axes[0], "cpu_percent", "CPU (%)"),
                           (axes[1], "memory_percent", "memory (%)")):
        series = []
        for node in sorted(by_node):
            pts = sorted((r["event_time"], r.get(key)) for r in by_node[node]
                         if r.get(key) is not None)
            if pts:
                series.append((node, pts))
        if len(series) <= 8:
            for node, pts in series:
                ax.plot([(t - origin) / scale for t, _ in pts], [v for _, v in pts],
                        marker="o" if len(pts) < 30 else None, markersize=3, label=node)
        else:  # many nodes: mean and range per sampling round
            grid = np.linspace(origin, end, 200)
            vals = np.array([np.interp(grid, [t for t, _ in p], [v for _, v in p])
                             for _, p in series])
            x = (grid - origin) / scale
            ax.fill_between(x, vals.min(axis=0), vals.max(axis=0), alpha=0.25,
                            label=f"min–max of {len(series)} nodes")
            ax.plot(x, vals.mean(axis=0), color="black", label="mean")
        gpu = [r.get("gpu_percent") for r in samples if r.get("gpu_percent") is not None]
        if key == "cpu_percent" and gpu:
            pts = sorted((r["event_time"], r["gpu_percent"]) for r in samples
                         if r.get("gpu_percent") is not None)
            ax.plot([(t - origin) / scale for t, _ in pts], [v for _, v in pts], "--",
                    label="GPU (mean of nodes)")
        ax.set_ylim(0, 105)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"{title} per node ({len(samples):,} samples)")
    axes[1].set_xlabel(f"time since the first task was created ({unit})")
    return fig


def durations(log: Log, title: str = "Task durations") -> Any:
    import numpy as np

    rows = [t for t in log.tasks if not t.is_block and t.started is not None
            and t.duration is not None and t.state in ("completed", "failed", "canceled")]
    unstarted = sum(1 for t in log.tasks if not t.is_block and t.started is None
                    and t.end is not None)
    if unstarted:
        title += (f" (not shown: {unstarted:,} task{'s' if unstarted > 1 else ''} that "
                  "reported no start)")
    if not rows:
        return _empty("No task reported a start", title)
    vals = np.array([t.duration for t in rows], dtype=float)
    fig = _figure(12, 3.6)
    ax = fig.add_subplot()
    positive = vals[vals > 0]
    lo = positive.min() if len(positive) else 1e-6
    hi = max(vals.max(), lo * 1.001)
    log_x = hi / lo > 100
    bins = np.geomspace(lo, hi, 60) if log_x else np.linspace(0, hi * 1.02, min(60, 4 + 2 * len(vals)))
    for state in ("completed", "failed", "canceled"):
        v = np.array([t.duration for t in rows if t.state == state], dtype=float)
        if len(v):
            if log_x:
                v = np.clip(v, lo, None)
            if state == "completed":
                ax.hist(v, bins=bins, color=COLORS[state], alpha=0.75,
                        label=f"{state} ({len(v):,})")
            else:  # outlined on top, so a few failures stay visible next to many successes
                ax.hist(v, bins=bins, histtype="step", linewidth=1.8, color=COLORS[state],
                        label=f"{state} ({len(v):,})")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("duration from TaskStarted to the end (s)")
    ax.set_ylabel("tasks")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{title} — p50 {np.percentile(vals, 50):.3g} s, p99 "
                 f"{np.percentile(vals, 99):.3g} s, max {vals.max():.3g} s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _empty(message: str, title: str) -> Any:
    fig = _figure(8, 2)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12)
    ax.set_title(title)
    return fig


def all_figures(log: Log) -> dict[str, Any]:
    """name -> figure, in the order the HTML page shows them."""
    return {"timeline": timeline(log), "concurrency": concurrency(log),
            "utilisation": utilisation(log), "durations": durations(log)}


def png_bytes(fig: Any) -> bytes:
    """``fig`` as PNG."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_png(fig: Any, path: str) -> bytes:
    """Write ``fig`` to ``path`` as PNG and return the bytes."""
    from ..safe_files import write_file

    data = png_bytes(fig)
    write_file(path, data, 0o600)
    return data
