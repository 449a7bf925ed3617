"""`mimo quickstart`, drastically shortened: every stage of the pipeline runs and leaves its outputs."""

import json
import os
import subprocess
import sys

from mimo.model import MiMoForCausalLM
from mimo.tokenizer import Tokenizer


def test_quickstart_end_to_end_in_miniature(tmp_path):
    run_dir = tmp_path / "qs"
    proc = subprocess.run(
        [sys.executable, "-m", "mimo", "quickstart", "--run-dir", str(run_dir), "--pretrain-steps", "4",
         "--sft-steps", "2", "--eval-per-tier", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "held-out accuracy" in out and "next commands to try" in out and "mimo sft" in out

    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["accuracy"]) == {f"{f}/tier{d}" for f in ("arithmetic", "linear", "word", "code") for d in (1, 2, 3)}
    assert all(v["n"] == 1 and 0 <= v["accuracy"] <= 1 for v in results["accuracy"].values())
    assert (run_dir / "curves.png").stat().st_size > 10_000
    assert "| arithmetic |" in (run_dir / "results.md").read_text()

    final = run_dir / "sft" / "model"
    model = MiMoForCausalLM.from_pretrained(final)
    assert model.config.num_nextn_predict_layers == 1
    assert len(Tokenizer.from_pretrained(final)) == model.config.vocab_size
    assert (run_dir / "pretrain" / "recipe.yaml").exists()  # the recipe the next commands point at
