"""Width-depth explorer: candidate student shapes at a parameter budget, with measured latency.

Shapes are ``layers x hidden x heads x intermediate`` with the head size fixed (64, or the
teacher's with ``like``), ``heads = hidden / head size`` and ``intermediate = 4 x hidden``;
layers go from 1 to the teacher's depth (12 without a teacher) and hidden sizes up to the
teacher's width (without a teacher: as wide as the budget allows). Parameters are counted
exactly as :func:`kdformer.models.count_parameters` counts the encoder (``AutoModel``:
embeddings and pooler included, no task head, which adds only hidden x labels), by building
the config on the ``meta`` device (no memory, no weights). The vocabulary and position range are
the teacher's, or BERT-base's (30,522 tokens, 512 positions) without one: at small widths the
embeddings are much of the budget. Latency is the median forward pass of randomly initialised
models, timed round-robin with :func:`kdformer.report.measure.measure_latencies`.

Shapes are ranked by what the distillation guideline (``docs/guideline.md``) found at a small
training budget, best first, each with the ``student.init`` it suggests and why:

0. the teacher's width at half its depth or more, initialised from teacher layers (§4, §5);
1. narrower at half depth or more, pruned from the teacher: deep and narrow beats shallow and
   wide (§3), a deep pruned student keeps most of the gain (§5), given more steps;
2. the teacher's width below half depth: gain kept falls with every layer cut (§5);
3. pruned and below half depth: narrow *and* shallow barely learns (§3, §4);
4. one layer: a majority-class predictor at any width (§5);
5. random initialisation (a shape no teacher layer can start): learns nothing (§4).

Within a rank, deeper first (§3), then closest to the budget. Without a teacher (``--params``
alone) the teacher is taken to be BERT-base-like (12 layers, head size 64), so no shape is at its
width and every shape is pruned; ``--like`` ranks against a real one.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch

from kdformer.config import StudentConfig
from kdformer.config.base import ConfigError
from kdformer.devices import resolve_device
from kdformer.families import intermediate_size_of
from kdformer.models import count_parameters, load_model_config
from kdformer.report.measure import measure_latencies
from kdformer.students import PRESETS, RELATIVE_PRESETS, WIDTH_PRESETS, student_shape

DEFAULT_HEAD_SIZE = 64
DEFAULT_MAX_LAYERS = 12
MAX_HEADS = 64  # width cap without a teacher
#: Latency models are timed together in groups of at most this many bytes of weights.
TIMING_GROUP_BYTES = 4 * 2**30

_BUDGET = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([kmbg]?)\s*$", re.IGNORECASE)
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


def parse_budget(text: str | int | float) -> int:
    """Parameter count from '11M', '4.4M', '500k', '1.2B' or '22000000' (also 22_000_000)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = int(text)
    else:
        match = _BUDGET.match(str(text))
        if not match:
            raise ConfigError(
                f"cannot read parameter budget '{text}': give a number with an optional k, M or "
                "B suffix, e.g. 11M, 4.4M, 500k or 22000000"
            )
        number = float(match[1].replace("_", "").replace(",", ""))
        value = int(round(number * _SUFFIX[match[2].lower()]))
    if value <= 0:
        raise ConfigError(f"parameter budget must be positive, got {text}")
    return value


@dataclass
class Candidate:
    """One student shape and what it costs."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    parameters: int
    latency_ms: float | None = None
    note: str = ""  # 'teacher' for the reference row, or the preset this shape equals
    init: str = ""  # the student.init the guideline suggests for this shape
    rank: int | None = None  # the guideline's rank (0 best; see the module docstring)
    why: str = ""  # why, in a few words, citing the guideline's section

    def overrides(self) -> str:
        """The config overrides that give this student."""
        return (
            f"student.num_layers={self.layers} student.hidden_size={self.hidden} "
            f"student.num_heads={self.heads} student.intermediate_size={self.intermediate}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Target:
    """What to explore: a budget, and the config shapes are built from."""

    budget: int
    config: Any  # a transformers config: vocabulary, positions, architecture of the candidates
    head_size: int
    max_layers: int
    max_hidden: int | None  # None: as wide as the budget allows
    teacher: str | None = None
    teacher_shape: Candidate | None = None


def base_config() -> Any:
    """BERT-base's config (vocabulary 30,522, 512 positions), the default architecture."""
    from transformers import BertConfig

    return BertConfig()


def shape_config(config: Any, layers: int, hidden: int, heads: int, intermediate: int) -> Any:
    """``config`` with this shape and 2 labels (as counted and timed)."""
    shaped = copy.deepcopy(config)
    shaped.num_hidden_layers = layers
    shaped.hidden_size = hidden
    shaped.num_attention_heads = heads
    shaped.intermediate_size = intermediate
    shaped.num_labels = 2
    shaped.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    shaped.label2id = {"LABEL_0": 0, "LABEL_1": 1}
    if getattr(shaped, "head_dim", None) is not None:
        shaped.head_dim = hidden // heads
    return shaped


def count_shape_parameters(
    config: Any, layers: int, hidden: int, heads: int, intermediate: int
) -> int:
    """Exact parameters of the encoder (``AutoModel``, no task head) of this shape."""
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(shape_config(config, layers, hidden, heads, intermediate))
    return count_parameters(model)


class _Counter:
    """Parameter counts per shape; counts are linear in depth, so two builds per width suffice."""

    def __init__(self, config: Any):
        self.config = config
        self.cache: dict[tuple[int, int, int], tuple[int, int]] = {}

    def __call__(self, layers: int, hidden: int, heads: int, intermediate: int) -> int:
        key = (hidden, heads, intermediate)
        if key not in self.cache:
            one = count_shape_parameters(self.config, 1, hidden, heads, intermediate)
            two = count_shape_parameters(self.config, 2, hidden, heads, intermediate)
            self.cache[key] = (one - (two - one), two - one)
        base, per_layer = self.cache[key]
        return base + layers * per_layer


def resolve_target(
    params: str | int | None = None, like: str | None = None, ratio: float | None = None
) -> Target:
    """The budget (``params``, or ``ratio`` x the ``like`` teacher's parameters) and grid bounds."""
    if ratio is not None and like is None:
        raise ConfigError("--ratio is a fraction of a teacher's parameters: give --like TEACHER")
    if (params is None) == (ratio is None):
        raise ConfigError(
            "give a budget: --params (e.g. 11M) or --like TEACHER --ratio R (e.g. 0.25), not both"
        )
    if ratio is not None and ratio <= 0:
        raise ConfigError(f"--ratio must be positive, got {ratio}")
    if like is None:
        return Target(
            budget=parse_budget(params),  # type: ignore[arg-type]
            config=base_config(),
            head_size=DEFAULT_HEAD_SIZE,
            max_layers=DEFAULT_MAX_LAYERS,
            max_hidden=None,
        )

    config = load_model_config(like)
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads"):
        if not hasattr(config, key):
            raise ConfigError(f"{like} ({type(config).__name__}) has no '{key}' in its config")
    layers, hidden = int(config.num_hidden_layers), int(config.hidden_size)
    heads = int(config.num_attention_heads)
    intermediate = intermediate_size_of(config)
    teacher_params = count_shape_parameters(config, layers, hidden, heads, intermediate)
    budget = parse_budget(params) if params is not None else int(round(ratio * teacher_params))  # type: ignore[operator]
    return Target(
        budget=budget,
        config=config,
        head_size=hidden // heads,
        max_layers=layers,
        max_hidden=hidden,
        teacher=like,
        teacher_shape=Candidate(
            layers, hidden, heads, intermediate, teacher_params, note="teacher"
        ),
    )


def _preset_names(target: Target) -> dict[tuple[int, int, int, int], str]:

    names = {shape: name for name, shape in PRESETS.items()}
    if target.teacher is not None:
        for name in [*RELATIVE_PRESETS, *WIDTH_PRESETS]:
            try:
                shape = student_shape(target.config, StudentConfig(preset=name, init="random"))
            except ConfigError:
                continue
            names.setdefault(tuple(shape.values()), name)  # type: ignore[arg-type]
    return names


GUIDELINE = "docs/guideline.md"

#: rank -> (short reason for the table, after the init; the reason in full), each citing the
#: guideline.
REASONS: dict[int, tuple[str, str]] = {
    0: (
        "≥ half depth at teacher width (§4, §5)",
        "the teacher's width at half its depth or more, initialised from teacher layers spread "
        "over its depth: the guideline's best students (§4, §5: 3 x 384 kept 91.5% of the "
        "teacher's gain on SST-2, 4 x 384 97.6%).",
    ),
    1: (
        "deep and narrow (§3, §5)",
        "half the teacher's depth or more, narrowed by importance pruning: at a fixed budget "
        "deep and narrow beat shallow and wide on SST-2 (§3), where the 6 x 192 pruned student "
        "kept 85% of the teacher's gain (§5). A pruned student starts further from the "
        "teacher: give it several times the steps of a teacher-width one (§3).",
    ),
    2: (
        "below half depth: gain falls (§5)",
        "below half the teacher's depth, gain kept falls with every layer cut (§5: on SST-2 "
        "2 x 384 kept 77% of the teacher's gain against 91.5% at 3 x 384).",
    ),
    3: (
        "narrow and shallow: barely learns (§3, §4)",
        "narrow and below half depth: pruning cannot rescue a student that is narrow and "
        "shallow at once (§4: 3 x 192 pruned kept 2% of the teacher's gain on SST-2, no "
        "better than random; §3: 2 x 320 collapsed to near the majority class).",
    ),
    4: (
        "1 layer: collapses (§5)",
        "one layer collapses to a majority-class predictor at any width (§5: 1 x 384 kept 0% "
        "of the gain on both tasks).",
    ),
    5: (
        "learns nothing at this budget (§4)",
        "no teacher layer can start this shape, and random initialisation learned nothing at "
        "the guideline's budget (§4: 0% of the gain at both widths, on both tasks).",
    ),
}


def reference_depth(target: Target) -> int:
    """The teacher's depth, or the assumed teacher's (``max_layers``) without one."""
    return target.teacher_shape.layers if target.teacher_shape is not None else target.max_layers


def assess(target: Target, candidate: Candidate) -> tuple[int, str]:
    """The guideline's rank of a shape (0 best) and the ``student.init`` it suggests."""
    teacher = target.teacher_shape
    half = -(-reference_depth(target) // 2)
    width = (candidate.hidden, candidate.heads, candidate.intermediate)
    at_width = teacher is not None and width == (
        teacher.hidden,
        teacher.heads,
        teacher.intermediate,
    )
    prunable = teacher is None or (
        candidate.layers <= teacher.layers
        and candidate.hidden <= teacher.hidden
        and candidate.heads <= teacher.heads
        and candidate.intermediate <= teacher.intermediate
    )
    init = "teacher" if at_width else "pruned" if prunable else "random"
    if init == "random":
        return 5, init
    if candidate.layers == 1:
        return 4, init
    if candidate.layers >= half:
        return (0 if at_width else 1), init
    return (2 if at_width else 3), init


def rank_key(target: Target, candidate: Candidate) -> tuple[int, int, int]:
    """Sort key: the guideline's rank, then deeper first (§3), then closest to the budget."""
    assert candidate.rank is not None
    return (candidate.rank, -candidate.layers, abs(candidate.parameters - target.budget))


def annotate(target: Target, candidate: Candidate) -> Candidate:
    """Set the candidate's ``rank``, ``init`` and short ``why``."""
    candidate.rank, candidate.init = assess(target, candidate)
    candidate.why = REASONS[candidate.rank][0]
    return candidate


def proposal_reason(target: Target, best: Candidate, tolerance: float) -> str:
    """Why the best-ranked shape is proposed, in full, citing the guideline; when no shape of
    rank 0 or 1 fits, what would give one."""
    assert best.rank is not None
    text = REASONS[best.rank][1]
    half = -(-reference_depth(target) // 2)
    if best.rank >= 2:
        count = _Counter(target.config)
        size = target.head_size
        smallest = count(half, size, 1, 4 * size)
        text += (
            f" It is proposed only because no shape of {half} layers or more is within "
            f"±{tolerance * 100:g}% of the budget"
            + (
                f" (the smallest, {half} x {size}, has {smallest / 1e6:.2f}M parameters): "
                "raise the budget for one."
                if smallest > target.budget * (1 + tolerance)
                else ": widen --tolerance for one."
            )
        )
    if target.teacher is None:
        text += (
            " Without --like the teacher is taken to be BERT-base-like (12 layers, head size "
            "64), so every shape is pruned; pruning needs a teacher at least as deep and wide, "
            "with that head size. Run `kdformer students --like TEACHER` with your teacher: at "
            "its width, teacher-layer init is the best start (§4)."
        )
    return f"{text} See {GUIDELINE}."


def candidate_shapes(target: Target, tolerance: float = 0.15) -> list[Candidate]:
    """Every grid shape whose parameter count is within ``tolerance`` of the budget, fewest
    parameters first."""
    if not 0 <= tolerance < 1:
        raise ConfigError(f"tolerance is a fraction of the budget in [0, 1), got {tolerance}")
    low, high = target.budget * (1 - tolerance), target.budget * (1 + tolerance)
    count = _Counter(target.config)
    names = _preset_names(target)
    found: list[Candidate] = []
    heads = 0
    while True:
        heads += 1
        hidden = heads * target.head_size
        if target.max_hidden is not None and hidden > target.max_hidden:
            break
        if target.max_hidden is None and heads > MAX_HEADS:
            break
        intermediate = 4 * hidden
        if count(1, hidden, heads, intermediate) > high:
            break  # wider only costs more
        for layers in range(1, target.max_layers + 1):
            parameters = count(layers, hidden, heads, intermediate)
            if parameters > high:
                break
            if parameters >= low:
                shape = (layers, hidden, heads, intermediate)
                candidate = Candidate(*shape, parameters, note=names.get(shape, ""))
                found.append(annotate(target, candidate))
    return sorted(found, key=lambda c: (c.parameters, c.layers))


def grid_range(target: Target) -> tuple[Candidate, Candidate]:
    """The smallest (1 layer, 1 head) and largest shapes of the grid, with their counts, to say
    why no shape fits a budget."""
    count = _Counter(target.config)
    size = target.head_size
    widest = target.max_hidden or MAX_HEADS * size
    heads = widest // size
    small = (1, size, 1, 4 * size)
    large = (target.max_layers, widest, heads, 4 * widest)
    return Candidate(*small, count(*small)), Candidate(*large, count(*large))


def no_fit_reason(target: Target, tolerance: float) -> str:
    """Why :func:`candidate_shapes` found nothing, and what to change."""
    small, large = grid_range(target)
    head = f"No shape within ±{tolerance * 100:g}% of {target.budget / 1e6:.2f}M parameters: "
    if target.budget < small.parameters:
        vocab = getattr(target.config, "vocab_size", None)
        embeddings = (
            f", {vocab * small.hidden / 1e6:.2f}M of them word embeddings ({vocab:,} tokens x "
            f"{small.hidden})"
            if isinstance(vocab, int)
            else ""
        )
        return (
            f"{head}the smallest shape, 1 layer x {small.hidden} (1 head), has "
            f"{small.parameters / 1e6:.2f}M{embeddings}. Raise the budget, or use --like with a "
            "teacher whose vocabulary or head size is smaller."
        )
    if target.budget > large.parameters:
        limit = " (at most as deep and wide as the teacher)" if target.teacher else ""
        return (
            f"{head}the largest shape, {large.layers} x {large.hidden}, has "
            f"{large.parameters / 1e6:.2f}M{limit}. Lower the budget."
        )
    return f"{head}no shape on the grid falls in that range. Widen --tolerance."


def _build(config: Any, candidate: Candidate) -> torch.nn.Module:
    from transformers import AutoModel

    shaped = shape_config(
        config, candidate.layers, candidate.hidden, candidate.heads, candidate.intermediate
    )
    torch.manual_seed(0)
    return AutoModel.from_config(shaped).eval()


def time_candidates(
    config: Any,
    candidates: list[Candidate],
    batch_size: int = 32,
    seq_length: int = 128,
    repeats: int = 5,
    warmup: int = 1,
    device: str = "auto",
) -> None:
    """Set ``latency_ms`` of each candidate: round-robin timing of randomly initialised models
    (in groups of at most ``TIMING_GROUP_BYTES`` of weights, so memory stays bounded)."""

    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and seq_length > positions:
        raise ConfigError(f"--seq-length {seq_length} exceeds the model's {positions} positions")
    target_device = resolve_device(device)
    groups: list[list[Candidate]] = [[]]
    size = 0
    for candidate in candidates:
        weight_bytes = candidate.parameters * 4
        if groups[-1] and size + weight_bytes > TIMING_GROUP_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(candidate)
        size += weight_bytes
    for group in groups:
        models = [_build(config, c) for c in group]
        results = measure_latencies(models, batch_size, seq_length, repeats, warmup, target_device)
        for candidate, result in zip(group, results):
            candidate.latency_ms = result["latency_ms"]
        del models


def explore(
    target: Target,
    tolerance: float = 0.15,
    latency: bool = True,
    batch_size: int = 32,
    seq_length: int = 128,
    repeats: int = 5,
    warmup: int = 1,
    device: str = "auto",
    max_candidates: int | None = 20,
) -> list[Candidate]:
    """Candidate rows at the budget, best first by the guideline's ranking (:func:`rank_key`),
    each with its suggested ``init`` and ``why``; ``latency`` measures each one.

    When more than ``max_candidates`` shapes qualify, the best-ranked are kept. With a teacher,
    its own shape comes first in the timed group and is returned as the last row
    (``note='teacher'``) for comparison.
    """
    rows = sorted(candidate_shapes(target, tolerance), key=lambda c: rank_key(target, c))
    if not rows:
        return []
    if max_candidates is not None:
        rows = rows[:max_candidates]
    reference = [copy.copy(target.teacher_shape)] if target.teacher_shape is not None else []
    if latency:
        time_candidates(
            target.config, reference + rows, batch_size, seq_length, repeats, warmup, device
        )
    return rows + reference
