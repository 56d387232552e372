"""A study's plots: bars per point (error bars over seeds) and retention vs speed-up."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from kdformer.config.study import short_keys, value_text
from kdformer.studies.plan import StudyPlan
from kdformer.studies.tables import PointSummary, baselines, mean_std, summarise


def _bar_values(p: PointSummary, y: str) -> list[float]:
    if y == "retention":
        return p.values("retention_pct")
    return [100 * r["metrics"][r["main_metric"]] for r in p.results]


def _floor(plan: StudyPlan, points: list[PointSummary], y: str) -> float | None:
    """The trivial baseline of a task's panel, in the panel's units (retention % of the
    teacher, or the metric x100); None when unknown."""
    floors = baselines(plan)
    values = []
    for r in (r for p in points for r in p.results):
        main, floor = r["main_metric"], floors.get(r["run_id"]) or {}
        if main in floor and r["teacher_metrics"].get(main):
            scale = 100 / r["teacher_metrics"][main] if y == "retention" else 100
            values.append(floor[main] * scale)
    return statistics.fmean(values) if values else None


def _draw_floor(ax: Any, floor: float | None) -> None:
    if floor is not None:
        ax.axhline(floor, color="tab:red", linestyle=":", linewidth=1, label="trivial baseline")


def plot_bars(plan: StudyPlan, results: list[dict[str, Any]], path: Path) -> bool:
    """One panel per task; bars with error bars (std over seeds); grouped when plot.x is set."""
    from matplotlib.figure import Figure

    study = plan.study
    tasks = summarise(plan, results)
    if not any(p.results for points in tasks.values() for p in points):
        return False
    x_dim = study.plot.x
    short = short_keys(list(study.grid))
    fig = Figure(
        figsize=(max(6.0, 1.1 + 0.9 * max(len(p) for p in tasks.values())) * len(tasks), 4.8)
    )
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, (task, points) in zip(axes, tasks.items()):

        def x_value(p: PointSummary) -> str:
            if x_dim == "variant":
                return p.variant or ""
            return value_text(p.grid[x_dim]) if x_dim else p.point

        def series(p: PointSummary) -> str:
            parts = [p.variant] if p.variant and x_dim != "variant" else []
            parts += [f"{short[k]}={value_text(v)}" for k, v in p.grid.items() if k != x_dim]
            return " ".join(parts) if x_dim else ""

        xs = list(dict.fromkeys(x_value(p) for p in points))
        names = list(dict.fromkeys(series(p) for p in points))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            chosen = [p for p in points if series(p) == name]
            positions, heights, errors = [], [], []
            for p in chosen:
                mean, std = mean_std(_bar_values(p, study.plot.y))
                positions.append(xs.index(x_value(p)) - 0.4 + width * (i + 0.5))
                heights.append(0 if math.isnan(mean) else mean)
                errors.append(std or 0)
            ax.bar(positions, heights, width, yerr=errors, capsize=3, label=name or None)
        main = next((r["main_metric"] for p in points for r in p.results), "metric")
        if study.plot.y == "retention":
            ax.axhline(100, color="grey", linestyle="--", linewidth=1, label="teacher")
            ax.set_ylabel("retention (% of teacher)")
        else:
            teacher = [r["teacher_metrics"][main] for p in points for r in p.results]
            if teacher:
                ax.axhline(100 * statistics.fmean(teacher), color="grey", linestyle="--")
            ax.set_ylabel(f"{main} x100")
        floor = _floor(plan, points, study.plot.y)
        _draw_floor(ax, floor)
        heights_all = [v for p in points for v in _bar_values(p, study.plot.y)]
        heights_all += [floor] if floor is not None else []
        if heights_all:
            low = min(heights_all)
            ax.set_ylim(max(0.0, low - 0.15 * (max(heights_all + [100]) - low) - 5), None)
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(short.get(x_dim, x_dim) if x_dim else "")
        ax.set_title(f"{study.name}: {task}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def plot_scatter(plan: StudyPlan, results: list[dict[str, Any]], path: Path) -> bool:
    """Retention vs speed-up, one panel per task, one marker per variant/grid point (error bars:
    std over seeds). A dashed line joins the Pareto front (the points no other point beats on
    both axes, teacher included); the teacher is the star at (1, 100)."""
    from matplotlib.figure import Figure

    tasks = summarise(plan, results)
    panels = []
    for task, points in tasks.items():
        found = []
        for p in points:
            (sx, ex), (sy, ey) = (
                mean_std(p.values("speedup")),
                mean_std(p.values("retention_pct")),
            )
            if not (math.isnan(sx) or math.isnan(sy)):
                found.append((sx, sy, ex or 0.0, ey or 0.0, p.point))
        if found:
            panels.append((task, sorted(found)))
    if not panels:
        return False
    fig = Figure(figsize=(5.5 * len(panels), 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (task, found) in zip(axes, panels):
        xs, ys, xe, ye, labels = zip(*found)
        ax.errorbar(xs, ys, xerr=xe, yerr=ye, fmt="o", capsize=3, linewidth=1, label="students")
        front = pareto_front([(1.0, 100.0), *zip(xs, ys)])
        ax.plot(*zip(*front), linestyle="--", color="grey", linewidth=1, label="Pareto front")
        for x, y, text in zip(xs, ys, labels):
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
        ax.plot(
            [1], [100], marker="*", markersize=12, color="black", linestyle="none", label="teacher"
        )
        _draw_floor(ax, _floor(plan, tasks[task], "retention"))
        ax.set_xlabel("speed-up vs teacher (latency ratio, x)")
        ax.set_ylabel("retention (% of teacher's main metric)")
        ax.set_title(f"{plan.study.name}: {task}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (speed-up, retention) points that no other point matches or beats on both axes, in
    speed-up order."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front[::-1]
