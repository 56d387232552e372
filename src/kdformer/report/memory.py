"""Peak memory of one inference forward pass, measured in a fresh process.

Resident memory is a process-wide figure, so each (model, length) runs alone: the child loads
the model, builds the inputs, reads its resident memory, runs one forward and reports its peak
(``VmHWM`` of ``/proc/self/status``) minus that; weights, libraries and the interpreter are
left out. (``ru_maxrss`` is not used: it keeps the parent's peak across fork + exec.) Linux
only; elsewhere the figure is None.

    python -m kdformer.report.memory MODEL_DIR MODEL_CLASS LENGTH [BATCH]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{STATUS} has no {field}")


def forward_peak_mib(
    model_dir: str | Path, model_class: str, length: int, batch: int = 1
) -> float | None:
    """MiB one forward of ``batch`` x ``length`` tokens adds to a fresh process's memory."""
    if not STATUS.exists():
        return None
    command = [sys.executable, "-m", "kdformer.report.memory", str(model_dir), model_class,
               str(length), str(batch)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(
            f"memory measurement of {model_dir} at {length} failed: {done.stderr[-800:]}"
        )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"])


def _main(model_dir: str, model_class: str, length: int, batch: int) -> None:
    import torch
    import transformers

    from kdformer.families import find_family
    from kdformer.models import load_model

    model = load_model(model_dir, getattr(transformers, model_class)).eval()
    family = find_family(model)
    if family is not None:
        family.set_length(model, length)
    vocab = int(model.config.vocab_size)
    ids = torch.randint(
        min(1000, vocab // 2), vocab, (batch, length), generator=torch.Generator().manual_seed(0)
    )
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    before = status_kib("VmRSS")
    with torch.inference_mode():
        model(**inputs)
    print(json.dumps({"peak_mib": (status_kib("VmHWM") - before) / 1024}))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
