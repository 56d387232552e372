"""``kdformer review REVIEW.yaml``: the performance review of efficient-attention distillation
(Brown et al., 2023): the runs (:mod:`.runner`), the cells kept between sessions
(:mod:`.cells`) and the tables and plots (:mod:`.tables`)."""

from kdformer.review.runner import run_config, run_review
from kdformer.review.tables import render_markdown, time_reduction_pct

__all__ = ["render_markdown", "run_config", "run_review", "time_reduction_pct"]
