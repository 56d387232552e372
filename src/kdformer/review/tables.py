"""The review's outputs: review.md (quality table in the paper's forms, time saved and speed-up
at every length), review.json and the two plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdformer.config.review import ReviewConfig


def reference_cell(result: dict[str, Any], cell: dict[str, Any]) -> dict[str, Any]:
    """The cell of the reference (full-attention) architecture on the same task."""
    return next(
        c for c in result["cells"]
        if c["task"] == cell["task"] and c["architecture"] == result["reference"]
    )  # fmt: skip


def _speedups(result: dict[str, Any], cell: dict[str, Any], length: int) -> tuple[float, float]:
    """Student speed-up at ``length`` vs its own teacher and vs the reference teacher."""
    key = str(length)
    ref = reference_cell(result, cell)
    own = cell["teacher_latency_ms"][key] / cell["student_latency_ms"][key]
    vs_ref = ref["teacher_latency_ms"][key] / cell["student_latency_ms"][key]
    return own, vs_ref


def time_reduction_pct(before_ms: float, after_ms: float) -> float:
    """Inference time saved, in % of ``before`` (Brown et al.'s form: 57.8% = 2.37x)."""
    return 100.0 * (1.0 - after_ms / before_ms)


def _convergence(training: dict[str, Any] | None) -> str:
    """A teacher's distance from its plateau, for the table: the last fifth's gain."""
    if not training or training.get("plateau") is None:
        return "not judged"
    gain = training["last_window_gain"]
    return f"+{gain:.2f} ({'plateau' if training['plateau'] else 'rising'})"


def _minutes(training: dict[str, Any] | None) -> str:
    if not training or training.get("train_seconds") is None:
        return "-"
    return f"{training['train_seconds'] / 60:.1f}"


def _curve_line(cell: dict[str, Any], role: str) -> str:
    """One model's learning curve (every evaluation during training), for the plateau claim."""
    training = cell.get(f"{role}_training") or {}
    points = training.get("curve_points") or []
    if not points:
        return ""
    scores = ", ".join(f"{step}: {score:.2f}" for step, score in points)
    kept = training.get("kept_step")
    kept_text = f" (kept: step {kept})" if kept is not None else ""
    return f"- {cell['architecture']} {role}: {scores}{kept_text}."


def render_markdown(review: ReviewConfig, result: dict[str, Any]) -> str:
    longest = max(review.lengths)
    reference = result["reference"]
    lines = [
        "# Performance review: efficient attention, distilled",
        "",
        f"Each row: the teacher converted to the architecture (positions to {longest}), "
        "fine-tuned on the task, distilled into the student of the base experiment. Latency: "
        f"batch {review.latency_batch_size}, median of {review.latency_repeats} round-robin "
        "rounds, CPU; memory: peak a forward adds, fresh process.",
        "",
        f"Quality: *vs {reference}* is each teacher against the {reference}-attention teacher "
        "(what the efficient attention costs or gains); *retention* is the student against its "
        "own teacher; *last fifth* is what the last fifth of the teacher's fine-tuning steps "
        "added to its best dev score (plateau: under the run's threshold, 0.5 points by "
        "default; not judged: no evaluation during training). Speed: the student's inference "
        "time reduction against its own teacher, with the speed-up, at every length.",
        "",
    ]
    for task in review.tasks:
        cells = [c for c in result["cells"] if c["task"] == task.name]
        metric = cells[0]["main_metric"]
        lines += [
            f"## {task.name} ({metric})",
            "",
            f"| architecture | teacher | vs {reference} | student | retention | teacher last "
            "fifth | train min T / S | params T / S (M) | "
            f"peak MiB @ {longest} T / S |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in cells:
            ref = reference_cell(result, c)
            vs_ref = (
                f"{100 * c['teacher_metric'] / ref['teacher_metric']:.1f}%"
                if ref["teacher_metric"]
                else "-"
            )
            peak_t = c["teacher_peak_mib"].get(str(longest))
            peak_s = c["student_peak_mib"].get(str(longest))
            memory = f"{peak_t:.0f} / {peak_s:.0f}" if peak_t is not None else "-"
            retention = f"{c['retention_pct']:.1f}%" if c["retention_pct"] is not None else "-"
            if not c["retention_meaningful"]:
                retention += " (teacher near baseline)"
            teacher_run, student_run = c.get("teacher_training"), c.get("student_training")
            lines.append(
                f"| {c['architecture']} | {100 * c['teacher_metric']:.2f} | {vs_ref} | "
                f"{100 * c['student_metric']:.2f} | {retention} | {_convergence(teacher_run)} | "
                f"{_minutes(teacher_run)} / {_minutes(student_run)} | "
                f"{c['teacher_parameters'] / 1e6:.1f} / {c['student_parameters'] / 1e6:.1f} | "
                f"{memory} |"
            )
        lines += [
            "",
            "| architecture | "
            + " | ".join(f"@ {n}: ms T / S, time saved, speed-up" for n in review.lengths)
            + f" | student vs {reference} teacher @ {longest} |",
            "|---|" + "---|" * len(review.lengths) + "---|",
        ]
        for c in cells:
            timing = []
            for n in review.lengths:
                teacher_ms = c["teacher_latency_ms"][str(n)]
                student_ms = c["student_latency_ms"][str(n)]
                timing.append(
                    f"{teacher_ms:.0f} / {student_ms:.0f}, "
                    f"{time_reduction_pct(teacher_ms, student_ms):.1f}%, "
                    f"{teacher_ms / student_ms:.2f}x"
                )
            ref_ms = reference_cell(result, c)["teacher_latency_ms"][str(longest)]
            student_ms = c["student_latency_ms"][str(longest)]
            lines.append(
                f"| {c['architecture']} | " + " | ".join(timing)
                + f" | {time_reduction_pct(ref_ms, student_ms):.1f}%, "
                f"{ref_ms / student_ms:.2f}x |"
            )  # fmt: skip
        seeds = sorted({c.get("seed") for c in cells if c.get("seed") is not None})
        if seeds:
            lines += ["", f"Seed{'s' if len(seeds) > 1 else ''}: {', '.join(map(str, seeds))}."]
        notes = [f"{c['architecture']} {k}: {v}" for c in cells for k, v in c["notes"].items()]
        if notes:
            lines += ["", "Notes: " + "; ".join(notes) + "."]
        curves = [_curve_line(c, role) for c in cells for role in ("teacher", "student")]
        if any(curves):
            lines += ["", "Learning curves (step: dev score):", ""]
            lines += [line for line in curves if line]
        lines.append("")
    return "\n".join(lines)


def plot_review(review: ReviewConfig, result: dict[str, Any], folder: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    tasks = [t.name for t in review.tasks]
    figure = Figure(figsize=(5 * len(tasks), 4), layout="constrained")
    for i, task in enumerate(tasks):
        ax = figure.add_subplot(1, len(tasks), i + 1)
        cells = [c for c in result["cells"] if c["task"] == task]
        for colour, c in enumerate(cells):
            for role, style in (("teacher", "-"), ("student", "--")):
                values = [c[f"{role}_latency_ms"][str(n)] for n in review.lengths]
                ax.plot(review.lengths, values, style, marker="o", color=f"C{colour}",
                        label=f"{c['architecture']} {role}")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(title=task, xlabel="tokens", ylabel="ms per forward (teacher -, student --)")
        ax.set_xticks(review.lengths, [str(n) for n in review.lengths])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.legend(fontsize=7)
    figure.savefig(folder / "latency.png", dpi=120)
    figure = Figure(figsize=(5 * len(tasks), 4), layout="constrained")
    longest = max(review.lengths)
    for i, task in enumerate(tasks):
        ax = figure.add_subplot(1, len(tasks), i + 1)
        for c in (c for c in result["cells"] if c["task"] == task):
            if c["retention_pct"] is None:
                continue
            _, vs_ref = _speedups(result, c, longest)
            ax.scatter([vs_ref], [c["retention_pct"]])
            ax.annotate(c["architecture"], (vs_ref, c["retention_pct"]), fontsize=8)
        ax.axhline(100, color="grey", linestyle=":", linewidth=1)
        ax.set(
            title=task,
            xlabel=f"student speed-up vs {result['reference']} teacher @ {longest} tokens",
            ylabel="retention (% of own teacher)",
        )
    figure.savefig(folder / "retention_speedup.png", dpi=120)


def write_review(review: ReviewConfig, result: dict[str, Any]) -> None:
    folder = review.output_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "review.json").write_text(json.dumps(result, indent=2, default=str))
    (folder / "review.md").write_text(render_markdown(review, result))
    plot_review(review, result, folder)
