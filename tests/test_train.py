"""Training: exact resume after SIGKILL, crash-safe checkpoints, zero-step resumes, bad input caught before
compute, SFT loss masking, and torchrun (2 processes, gloo) matching one process with the same global batch."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mimo.train.checkpointing as checkpointing
from mimo.data.packing import PackedStream, ReasoningSource
from mimo.recipe import load_recipe
from mimo.tokenizer import Tokenizer, train_tokenizer
from mimo.train.checkpointing import STATE_FILE, latest_checkpoint
from mimo.train.loop import TrainRecipe, tokenizer_training_texts, train

TINY = """
model: {preset: mimo-2m, config: {hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, head_dim: 16}}
tokenizer: {path: TOKENIZER}
sources: {all: {kind: reasoning, families: [arithmetic, word], difficulties: [1, 2]}}
stages:
  - {steps: 6, seq_len: 64, mixture: {all: 1.0}, mtp_loss_weight: 0.3}
  - {steps: 6, seq_len: 96, mixture: {all: 1.0}, mtp_loss_weight: 0.1}
optim: {lr: 3.0e-3, warmup_steps: 3, decay_fraction: 0.3}
train: {micro_batch: 4, threads: 1, checkpoint_every: 3}
"""


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recipe")
    texts = tokenizer_training_texts(load_recipe(TrainRecipe, None, ["tokenizer.train_documents=1500"]))
    train_tokenizer(texts, 320).save_pretrained(folder / "tokenizer")
    path = folder / "tiny.yaml"
    path.write_text(TINY.replace("TOKENIZER", str(folder / "tokenizer")))
    return path


def mimo_cli(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mimo", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def losses(run_dir: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["main_loss"], r["mtp_loss"]) for r in rows if r["kind"] == "train"]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_resume_after_sigkill_is_bit_identical(recipe_file, tmp_path):
    reference = tmp_path / "reference"
    finish(mimo_cli("pretrain", str(recipe_file), f"run_dir={reference}"))

    killed = tmp_path / "killed"
    proc = mimo_cli("pretrain", str(recipe_file), f"run_dir={killed}")
    deadline = time.time() + 120
    while latest_checkpoint(killed) is None:  # kill -9 as soon as the first checkpoint exists, mid-training
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = int(latest_checkpoint(killed).name.split("_")[1])
    assert interrupted_at < 12

    out = finish(mimo_cli("pretrain", str(recipe_file), f"run_dir={killed}"))
    assert "resuming from" in out
    assert losses(killed) == losses(reference)  # every step, bit for bit (JSON keeps float64 repr exactly)
    assert len(losses(reference)) == 12
    for name, tensor in weights(reference / "model").items():
        assert torch.equal(tensor, weights(killed / "model")[name]), name


def test_checkpoint_crashed_mid_write_is_never_taken_for_complete(recipe_file, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    recipe = load_recipe(TrainRecipe, recipe_file, [f"run_dir={run_dir}", "stages.0.steps=2", "stages.1.steps=2",
                                                    "train.checkpoint_every=2"])
    real_save = checkpointing.save_model

    def crash_on_second_checkpoint(model, path, **kw):
        if "step_00000004" in str(path) or "step_00000004" in str(Path(path).parent):
            (Path(path) / "model.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt("simulated crash while writing the checkpoint")
        real_save(model, path, **kw)

    monkeypatch.setattr(checkpointing, "save_model", crash_on_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(recipe)
    # A hard crash (no cleanup at all) leaves a hidden temp folder; and a visible folder without state.
    hidden = run_dir / "checkpoints" / ".step_00000004.tmp-crash"
    hidden.mkdir()
    (hidden / "model.safetensors").write_bytes(b"partial")
    (hidden / STATE_FILE).write_bytes(b"partial")
    (run_dir / "checkpoints" / "step_00000006").mkdir()
    assert latest_checkpoint(run_dir).name == "step_00000002"

    monkeypatch.setattr(checkpointing, "save_model", real_save)
    train(recipe)
    assert latest_checkpoint(run_dir).name == "step_00000004"
    assert [s for s, _, _ in losses(run_dir)] == [1, 2, 3, 4]  # the crashed run's step 3-4 lines were dropped


def test_zero_step_resume_fails_loudly(recipe_file, tmp_path):
    run_dir = tmp_path / "done"
    args = ("pretrain", str(recipe_file), f"run_dir={run_dir}", "stages.0.steps=1", "stages.1.steps=1")
    finish(mimo_cli(*args))
    proc = mimo_cli(*args)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "would train zero steps" in out


@pytest.mark.parametrize("override, message", [
    ("optim.lrate=1", "unknown key 'lrate' in OptimArgs"),
    ("stages.1.seq_len=4096", "seq_len 4096 is longer than the model allows"),
    ("sources.all.kind=text", "kind 'text' needs a path"),
    ("sources.all.path=EMPTY", "the corpus is empty"),
    ("stages.0.mixture={nope: 1.0}", "uses source 'nope'"),
])
def test_bad_input_is_a_clear_error_before_any_compute(recipe_file, tmp_path, override, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    run_dir = tmp_path / "run"
    extra = ["sources.all.kind=text"] if "EMPTY" in override else []
    proc = mimo_cli("pretrain", str(recipe_file), f"run_dir={run_dir}", *extra, override.replace("EMPTY", str(empty)))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and message in out and "Traceback" not in out, out
    assert not (run_dir / "metrics.jsonl").exists() and latest_checkpoint(run_dir) is None


def test_sft_malformed_chat_line_is_reported_with_its_line_number(recipe_file, tmp_path):
    model_dir = tmp_path / "pre"
    finish(mimo_cli("pretrain", str(recipe_file), f"run_dir={model_dir}", "stages.0.steps=1", "stages.1.steps=0"))
    chats = tmp_path / "chats.jsonl"
    good = {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "\\boxed{2}"}]}
    chats.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n{not json\n")
    proc = mimo_cli("sft", str(recipe_file), f"run_dir={tmp_path / 'sft'}", f"model.init_from={model_dir / 'model'}",
                    "sources.all.kind=chat", f"sources.all.path={chats}", "stages.1.steps=0")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "chats.jsonl:3: malformed JSON" in out, out

    chats.write_text(json.dumps(good) + "\n")
    finish(mimo_cli("sft", str(recipe_file), f"run_dir={tmp_path / 'sft'}", f"model.init_from={model_dir / 'model'}",
                    "sources.all.kind=chat", f"sources.all.path={chats}", "stages.0.steps=2", "stages.1.steps=0"))
    assert len(losses(tmp_path / "sft")) == 2


def test_sft_rows_train_on_assistant_tokens_only(recipe_file):
    tok = Tokenizer.from_pretrained(recipe_file.parent / "tokenizer")
    source = ReasoningSource(tok, ["arithmetic"], [1], seed=0, chat=True)
    stream = PackedStream({"c": source}, {"c": 1.0}, 256, 0, tok.pad_token_id, split_long_documents=False)
    ids, labels, docs = stream.next_row()
    trained = tok.decode([t for t in labels if t != -100])
    assert "<think>" in trained and "\\boxed{" in trained and "<|im_end|>" in trained
    assert "What is" not in trained and "user" not in trained  # the prompt and headers are never targets
    assert len(set(docs)) >= 2  # several conversations packed per row


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(recipe_file, tmp_path):
    common = ["stages.0.steps=3", "stages.1.steps=3", "train.micro_batch=2", "train.checkpoint_every=100"]
    single = tmp_path / "single"
    finish(mimo_cli("pretrain", str(recipe_file), f"run_dir={single}", "train.grad_accum=2", *common))
    ddp = tmp_path / "ddp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
         "-m", "mimo", "pretrain", str(recipe_file), f"run_dir={ddp}", "train.grad_accum=1", *common],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    finish(proc)
    single_losses, ddp_losses = losses(single), losses(ddp)
    assert [s for s, _, _ in ddp_losses] == [1, 2, 3, 4, 5, 6]
    for (_, a, b), (_, c, d) in zip(single_losses, ddp_losses):
        assert a == pytest.approx(c, rel=1e-5) and b == pytest.approx(d, rel=1e-5)
    reference = weights(single / "model")
    for name, tensor in weights(ddp / "model").items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=1e-5)
